"""The studies: orchestration over the rooms below (data, locate, edit, probes, plots, organism).

- `knowedit/`: the KnowEdit study of editors (config, plan, store, unit, executors, metrics, report);
- `klob/`: the KLoB study of locators;
- `neuron_controls`: the control facts of the knowledge-neuron specificity check.
"""
