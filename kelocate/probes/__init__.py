"""Instruments that measure a locator or an edit, above `locate/` and `edit/` (they read, never change).

- `klob`: KLoB's RSim scores of a locator (consistency, relevance, unbiasedness);
- `projection`: value vectors and an edit's top dW columns projected through the unembedding (Dar et al.),
  Hit@k of the new target with random-column and base-rate controls;
- `overlap`: the overlap of two traces' top-k layers over k, against the chance of two random rankings;
- `sparsity`: how an edit's dW is spread over layers, value columns and rows, and its numerical rank.
"""
