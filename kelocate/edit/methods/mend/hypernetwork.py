"""MEND's hypernetwork and what it reads and writes on the model.

For an MLP value matrix W = `down_proj` [d_model, d_mlp] the gradient of the edit loss is a sum of rank-one
terms, one per token: dL/dW = sum_t delta_t u_t^T, with u_t the layer's input (`mlp.hook_post`) and
delta_t the gradient at its output (`hook_mlp_out`): `factors` reads both in one forward (the model's
reader for u, a differentiable zero write at the output for delta). Per edited layer, a small network g
maps each (u_t, delta_t), normalised by running statistics, through a low-rank residual MLP to
(u~_t, delta~_t), and the edit is dW = -lr_l * sum_t delta~_t u~_t^T (lr_l learned per layer). g starts as
the identity (the last layers of its blocks are zero), so an untrained MEND is plain gradient descent.

`edited_forward` runs the model as if W_l + dW_l without writing a weight (the MLP output gains
u @ dW_l^T, differentiable in dW), which is how training reaches g. `load_hypernetwork` reads a trained one
(`mend.json` + `mend.safetensors`) and refuses one trained for another model.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import torch
from torch import nn

from kelocate.edit.losses import masked_target_loss, prompt_target_batch
from kelocate.edit.methods.mend.config import CHECKPOINT, CONFIG, MENDConfig
from kelocate.edit.request import EditRequest
from kelocate.errors import KelocateError
from kelocate.model.scoring import grad_on
from kelocate.model.sites import Patch, patching, read, site


class Normaliser(nn.Module):
    """Running mean and variance of a feature vector (updated while training, fixed when editing)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("var", torch.ones(dim))
        self.register_buffer("count", torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            with torch.no_grad():
                n, batch = self.count, x.shape[0]
                mean = x.mean(0)
                var = x.var(0, unbiased=False)
                total = n + batch
                delta = mean - self.mean
                self.var.copy_((self.var * n + var * batch + delta ** 2 * n * batch / total) / total)
                self.mean.add_(delta * batch / total)
                self.count.add_(batch)
        return (x - self.mean) / (self.var.sqrt() + 1e-6)


class LowRankBlock(nn.Module):
    """x + B relu(A x), with B zero at the start (an identity map until trained)."""

    def __init__(self, dim: int, rank: int) -> None:
        super().__init__()
        self.down = nn.Linear(dim, rank)
        self.up = nn.Linear(rank, dim)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.up(torch.relu(self.down(x)))


class GradientTransform(nn.Module):
    """MEND's per-layer network g: (u, delta) -> (u~, delta~), normalised, two low-rank residual blocks."""

    def __init__(self, d_in: int, d_out: int, rank: int, lr_init: float) -> None:
        super().__init__()
        self.d_in = d_in
        self.norm = Normaliser(d_in + d_out)
        self.blocks = nn.Sequential(LowRankBlock(d_in + d_out, rank), LowRankBlock(d_in + d_out, rank))
        self.log_lr = nn.Parameter(torch.tensor(math.log(lr_init)))

    def forward(self, u: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """dW [d_out, d_in] from per-token factors u [n, d_in], delta [n, d_out]."""
        both = self.blocks(self.norm(torch.cat([u, delta], dim=-1)))
        u_t, delta_t = both[:, : self.d_in], both[:, self.d_in:]
        return -self.log_lr.exp() * delta_t.T @ u_t


class Hypernetwork(nn.Module):
    """One gradient transform per edited layer."""

    def __init__(self, config: MENDConfig) -> None:
        super().__init__()
        self.config = config
        self.transforms = nn.ModuleDict({str(layer): GradientTransform(config.d_mlp, config.d_model, config.rank,
                                                                      config.lr_init) for layer in config.layers})


# ---------------------------------------------------------------------- factors and edited forwards
def factors(model, requests: Sequence[EditRequest], layers: Sequence[int]) -> dict[int, tuple[torch.Tensor, ...]]:
    """Per layer: u [n_tokens, d_mlp] and delta [n_tokens, d_model] of the edit loss (FT-M's masked
    cross-entropy of the targets after their prompts) at every real token of the batch."""
    batch = prompt_target_batch(model, requests)
    probes = {layer: torch.zeros(*batch["ids"].shape, model.d_model, device=model.device, requires_grad=True)
              for layer in layers}

    def probe(layer: int) -> Callable[[torch.Tensor], torch.Tensor]:
        return lambda x: x + probes[layer].to(x.dtype)  # zero: its gradient is the loss's at the MLP output

    patches = [Patch(site("mlp", layer), probe(layer), differentiable=True) for layer in layers]
    with grad_on(model, []), patching(model, patches):
        logits, inputs = read(model, batch["ids"], batch["mask"], [site("mlp_post", layer) for layer in layers])
        loss = masked_target_loss(logits, batch["ids"], batch["target_mask"])
        grads = torch.autograd.grad(loss, [probes[layer] for layer in layers])
    real = batch["mask"].bool()
    return {layer: (inputs[site("mlp_post", layer)][real].float(), g[real].float())
            for layer, g in zip(layers, grads, strict=True)}


@contextlib.contextmanager
def edited_forward(model, deltas: dict[int, torch.Tensor]) -> Iterator[Callable[[torch.Tensor, torch.Tensor],
                                                                                  torch.Tensor]]:
    """Inside the block, `forward(ids, mask)` runs the model as if W_l + dW_l: the MLP output of each layer
    gains u @ dW_l^T, u its input read in the same forward (differentiable in dW and through u)."""
    inputs: dict[str, torch.Tensor] = {}

    def add(layer: int) -> Callable[[torch.Tensor], torch.Tensor]:
        return lambda x: x + (inputs[site("mlp_post", layer)].float() @ deltas[layer].T).to(x.dtype)

    reads = [site("mlp_post", layer) for layer in deltas]

    def forward(ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return read(model, ids, mask, reads, detach=False, on=inputs.__setitem__)[0]

    with patching(model, [Patch(site("mlp", layer), add(layer), differentiable=True) for layer in deltas]):
        yield forward


# ---------------------------------------------------------------------- checkpoints
def load_hypernetwork(path: str | Path, model=None) -> Hypernetwork:
    """A trained MEND hypernetwork from its folder; with `model`, refuse one trained for another model."""
    from safetensors.torch import load_file

    folder = Path(path)
    if not (folder / CONFIG).is_file() or not (folder / CHECKPOINT).is_file():
        raise KelocateError(f"{str(folder)!r} holds no MEND checkpoint ({CONFIG} and {CHECKPOINT}); train one with "
                            "`kelocate train mend --out DIR`")
    try:
        config = MENDConfig(**json.loads((folder / CONFIG).read_text()))
        net = Hypernetwork(config)
        state = {k.removeprefix("net/"): v for k, v in load_file(str(folder / CHECKPOINT)).items()
                 if k.startswith("net/")}
        net.load_state_dict(state)
    except Exception as exc:  # a damaged or foreign file: one line
        raise KelocateError(f"{str(folder)!r} is not a usable MEND checkpoint ({type(exc).__name__}: {exc}); train "
                            "one with `kelocate train mend --out DIR`") from None
    if model is not None and config.fingerprint != model.fingerprint:
        raise KelocateError(f"the MEND hypernetwork in {str(folder)!r} was trained for model {config.fingerprint}, "
                            f"not {model.name} ({model.fingerprint}); train one for this model")
    return net.eval()
