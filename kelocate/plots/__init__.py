"""Every figure kelocate draws, in one style; `plots/` imports only `errors` and `atomic` and takes what
it draws as plain data (results, dicts), never a model.

- `style`: formats, `new_figure` / `save_figure` (Agg canvas, atomic writes), colours and font sizes;
- `trace`: causal-trace heatmaps and the averaged indirect effects of a data set;
- `klob`: the KLoB RSim curves over top-k layers;
- `study`: the KnowEdit study's sequential-editing curves;
- `projection`: Hit@k of an edit's top value columns before and after (the comprehensive study's Figure 7);
- `sparsity`: |dW| heatmaps on one colour scale and the concentration measures over many edits (Figure 6);
- `case`: the three traces of a case on one colour scale per kind, and their layer overlap over k (Figure 9);
- `locate_vs_edit`: effect vs edit success per (fact, layer), and the per-layer means;
- `recovery`: the knowledge graph and the model after edits and edits back, side by side (Figure 10).
"""
