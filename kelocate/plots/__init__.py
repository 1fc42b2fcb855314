"""Every figure kelocate draws, in one style; `plots/` imports only `errors` and `atomic` and takes what
it draws as plain data (results, dicts), never a model.

- `style`: formats, `new_figure` / `save_figure` (Agg canvas, atomic writes), colours and font sizes;
- `trace`: causal-trace heatmaps and the averaged indirect effects of a data set;
- `klob`: the KLoB RSim curves over top-k layers;
- `study`: the KnowEdit study's sequential-editing curves.
"""
