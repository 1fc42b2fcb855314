"""Float tolerances the tests use, each justified by float32 rounding at the magnitude compared.

Two code paths that compute the same maths in another order (a batch of 3 vs one prompt, 1 vs 2 threads,
BLAS kernels picked on Intel vs AMD, fused vs eager attention) differ by rounding only. float32 has a
relative precision of 2^-23 = 1.2e-7 per operation; a dot product of length d reordered changes by up to
about d * eps relative to the sum of |terms|, and a few layers of a tiny model compound that. Measured: a
batch of 3 vs the same prompt alone differed by 1e-4 on logits of size 10 on an AMD EPYC (1e-5 relative).
A bug (a patch at the wrong position, a missing hook) changes logits by 1e-2 to 1, far above these.
"""

from __future__ import annotations

import torch

F32_EPS = float(torch.finfo(torch.float32).eps)  # 1.19e-7

# relative to the largest magnitude compared: ~840 ulps, 10x the worst reordering difference measured
REL = 1e-4


def tol(reference: torch.Tensor | float) -> float:
    """Absolute tolerance for comparing values computed along two float32 paths: REL x (1 + max |ref|)."""
    peak = float(torch.as_tensor(reference).abs().max()) if torch.is_tensor(reference) else abs(float(reference))
    return REL * (1.0 + peak)


# a probability from a softmax of logits differing by at most delta moves by at most delta / 2 (the
# derivative of softmax is bounded by 1/4 per logit, two logits involved); logits here stay below ~40
PROB_TOL = REL * (1.0 + 40.0) / 2


def assert_close(actual: torch.Tensor, reference: torch.Tensor, what: str = "values") -> None:
    """Assert two float32 tensors agree within `tol(reference)`, with the largest difference in the message."""
    diff = float((actual.float() - reference.float()).abs().max())
    bound = tol(reference)
    assert diff <= bound, f"{what}: max |diff| {diff:.3g} exceeds {bound:.3g}"
