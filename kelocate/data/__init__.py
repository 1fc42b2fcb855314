"""Readers of the user's data files, and nothing else: `data/` imports only `errors` and `atomic`.

- `records`: the one line-numbered JSON / JSON-lines record reader and the one error format
  (`FILE:RECORD: FIELD: PROBLEM; ...`) every reader below reports malformed records in;
- `facts`: the one `Fact` type (a prompt, its subject, its answer) and fact files;
- `knowedit`: the six KnowEdit task files and ROME's CounterFact (`EditCase`);
- `klob`: the KLoB-c, -r and -u files (`KlobFact`, `KlobChain`);
- `training`: training edits for MEND and SERAC and IKE's pool (`TrainingRecord`);
- `general`: general-ability files (`GeneralSet`).

Corpora for second-moment statistics are read by `kelocate.edit.stats.read_corpus`: editors accept a corpus
path in their settings, and `edit/` may not import `data/`.
"""
