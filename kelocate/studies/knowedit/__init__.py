"""The KnowEdit study (the comprehensive study's Tables 4-6 and Figure 4): every editor on every task,
scored by teacher-forced and generation metrics, resumable, serial or on Ray.

One job per module, in the order a run uses them: `config` (the TOML schema), `plan` (task files, the
selected cases, the units), `store` (the study folder: results.jsonl, timings, study.json), `training`
(MEND and SERAC trained for the study), `unit` (edit, score, revert one unit), `executors` (serial and Ray,
one loop), `runner` (`run_study`: all of it in order); `metrics` and `general` score, `report` writes the
tables (`benchmarks/edit_quality.py` scores its organism edits with the same `metrics`).
"""
