"""The studies: orchestration over the rooms below (data, locate, edit, probes, plots, organism).

- `knowedit/`: the KnowEdit study of editors (config, plan, store, unit, executors, metrics, report);
- `klob/`: the KLoB study of locators;
- `neuron_controls`: the control facts of the knowledge-neuron specificity check;
- `case`: one fact, a question that needs its chain and an unrelated fact of the same subject, traced side by
  side with the overlap of their located layers (the comprehensive study's SMAP case, Figure 9);
- `locate_vs_edit`: the single-layer effect of each layer against ROME's success editing it (Hase et al.);
- `recovery` (with `recovery_probes`): edit facts and edit them back, in the world's graph and in the model
  (the comprehensive study's Figure 10, measured).
"""
