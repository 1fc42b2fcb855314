"""Readers of the user's data files, and nothing else: `data/` imports only `errors` and `atomic`.

- `records`: the one line-numbered JSON / JSON-lines record reader and the one error format
  (`FILE:RECORD: FIELD: PROBLEM; ...`) every reader below reports malformed records in;
- `facts`: the one `Fact` type (a prompt, its subject, its answer) and fact files;
- `knowedit`: the six KnowEdit task files and ROME's CounterFact (`EditCase`);
- `klob`: the KLoB-c, -r and -u files (`KlobFact`, `KlobChain`);
- `training`: training edits for MEND and SERAC and IKE's pool (`TrainingRecord`);
- `general`: general-ability files (`GeneralSet`);
- `corpora`: text corpora (`read_corpus`: `.jsonl` with a "text" field, or one document a line), which the
  editors' key statistics read when a corpus path is given (`edit/` imports `data/` for it).
"""
