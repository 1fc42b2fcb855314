"""MEND (Mitchell et al. 2022): a trained hypernetwork turns the fine-tuning gradient of an edit into a
weight update.

For an MLP value matrix W = `down_proj` [d_model, d_mlp] the gradient of the edit loss is a sum of rank-one
terms, one per token: dL/dW = sum_t delta_t u_t^T, with u_t the layer's input (`mlp.hook_post`) and
delta_t the gradient at its output (`hook_mlp_out`). Per edited layer, a small network g maps each
(u_t, delta_t), normalised by running statistics, through a low-rank residual MLP to (u~_t, delta~_t),
and the edit is dW = -lr_l * sum_t delta~_t u~_t^T (lr_l learned per layer). g starts as the identity
(the last layers of its blocks are zero), so an untrained MEND is plain gradient descent.

Training (`train`) follows the paper: for a batch of edits, compute dW from the factors, run the edited
model (W + dW applied through hooks, so gradients reach g), and minimise
    c_edit * NLL(target | prompt and paraphrases) + KL(base || edited) on unrelated prompts (every position)
    and on the edits' neighbours (the positions that predict their answers).
Checkpoints (hypernetwork, optimiser, step, random state, loss log) are written atomically every
`save_every` steps; rerunning `train` with the same folder resumes from the last one.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kelocate.edit.base import Editor
from kelocate.edit.methods.ft import answer_batch, masked_target_loss, prompt_target_batch
from kelocate.edit.request import EditRequest
from kelocate.edit.training import Checkpoints, TrainingEdit, loss_row, with_overrides
from kelocate.errors import KelocateError
from kelocate.model import weights
from kelocate.model.scoring import grad_on
from kelocate.model.sites import site

CHECKPOINT = "mend.safetensors"
CONFIG = "mend.json"


@dataclass
class MENDConfig:
    """What a MEND hypernetwork was trained for and how."""

    layers: list[int]
    rank: int = 64
    lr_init: float = 1e-3
    c_edit: float = 0.1
    lr: float = 1e-3
    steps: int = 500
    batch_size: int = 4
    save_every: int = 50
    seed: int = 0
    fingerprint: str = ""
    d_model: int = 0
    d_mlp: int = 0
    trained_steps: int = 0
    notes: list[str] = field(default_factory=list)


def profile_config(model, layers: Sequence[int] | None = None, **overrides: Any) -> MENDConfig:
    """Training settings from the model's profile ([mend] train_* keys); `layers` default: the last three;
    keyword overrides that are None are ignored."""
    from kelocate.edit.config import resolve

    hp = resolve("mend", model)
    config = MENDConfig(layers=list(layers) if layers else list(range(max(0, model.n_layers - 3), model.n_layers)),
                        rank=hp["rank"], lr_init=hp["lr_init"], c_edit=hp["c_edit"], lr=hp["train_lr"],
                        steps=hp["train_steps"], batch_size=hp["train_batch_size"])
    return with_overrides(config, overrides)


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
    inputs: dict[int, torch.Tensor] = {}

    def keep(layer):
        def hook(x, hook):
            inputs[layer] = x.detach()
        return hook

    def probe(layer):
        def hook(x, hook):
            return x + probes[layer].to(x.dtype)
        return hook

    hooks = [(site("mlp_post", layer), keep(layer)) for layer in layers]
    hooks += [(site("mlp", layer), probe(layer)) for layer in layers]
    with grad_on(model, []), model.bridge.hooks(fwd_hooks=hooks):
        logits = model.bridge(batch["ids"], attention_mask=batch["mask"])
        loss = masked_target_loss(logits, batch["ids"], batch["target_mask"])
        grads = torch.autograd.grad(loss, [probes[layer] for layer in layers])
    real = batch["mask"].bool()
    return {layer: (inputs[layer][real].float(), g[real].float()) for layer, g in zip(layers, grads, strict=True)}


def edited_hooks(deltas: dict[int, torch.Tensor]) -> list[tuple[str, Callable]]:
    """Hooks that run the model as if W_l + dW_l: the MLP output gains u @ dW_l^T (differentiable in dW)."""
    inputs: dict[int, torch.Tensor] = {}

    def keep(layer):
        def hook(x, hook):
            inputs[layer] = x
        return hook

    def add(layer):
        def hook(x, hook):
            return x + (inputs[layer].float() @ deltas[layer].T).to(x.dtype)
        return hook

    return [h for layer in deltas for h in ((site("mlp_post", layer), keep(layer)), (site("mlp", layer), add(layer)))]


# ---------------------------------------------------------------------- the editor
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


class MEND(Editor):
    """Edit with a trained MEND hypernetwork (`hypernet` = its folder or a loaded `Hypernetwork`)."""

    method = "mend"
    locate = None  # it edits the layers its hypernetwork was trained for
    batch = True

    def __init__(self, config_file=None, hypernet: str | Path | Hypernetwork | None = None, **overrides: Any) -> None:
        super().__init__(config_file, **overrides)
        self.hypernet = hypernet

    def network(self, model) -> Hypernetwork:
        if self.hypernet is None:
            raise KelocateError("mend needs a trained hypernetwork: pass --hypernet DIR (see `kelocate train mend`)")
        if not isinstance(self.hypernet, Hypernetwork):
            self.hypernet = load_hypernetwork(self.hypernet, model)
        elif self.hypernet.config.fingerprint != model.fingerprint:
            raise KelocateError("this MEND hypernetwork was trained for another model; train one for this model")
        return self.hypernet

    def apply(self, model, requests, layers=None, layer_origin=None):
        net = self.network(model)
        return super().apply(model, requests, layers=net.config.layers,
                             layer_origin=layer_origin or {"source": "mend hypernetwork", "layers": net.config.layers})

    def _edit(self, model, requests: list[EditRequest], layers: list[int], hp: dict[str, Any]) -> dict[str, Any]:
        net = self.network(model)
        with torch.no_grad():
            found = factors(model, requests, layers)
            for layer, (u, delta) in found.items():
                param = weights.mlp_out(model, layer)
                param.add_(net.transforms[str(layer)](u, delta).to(param.dtype))
        return {"hypernetwork_steps": net.config.trained_steps}


# ---------------------------------------------------------------------- training
def _kl_base_edited(base: torch.Tensor, edited: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """KL(base || edited) of next-token distributions, averaged over real positions."""
    base_logp = torch.log_softmax(base.float(), dim=-1)
    edited_logp = torch.log_softmax(edited.float(), dim=-1)
    kl = (base_logp.exp() * (base_logp - edited_logp)).sum(-1)
    weight = mask.to(kl.dtype)
    return (kl * weight).sum() / weight.sum()


def _edit_requests(batch: Sequence[TrainingEdit]) -> list[EditRequest]:
    """The prompts trained to give the new target: each request and its paraphrases."""
    out = []
    for item in batch:
        r = item.request
        out.append(r)
        out += [EditRequest(p, r.subject, r.target_new) for p in r.paraphrases if r.subject in p]
    return out


def training_step(model, net: Hypernetwork, batch: Sequence[TrainingEdit], c_edit: float) -> dict[str, torch.Tensor]:
    """MEND's losses for one batch of edits (differentiable in the hypernetwork's parameters): the edit loss,
    and KL(base || edited) over every position of the unrelated prompts plus, for the edits' neighbours
    (the subject's other facts), at the positions that predict their answers: what locality measures."""
    layers = net.config.layers
    found = factors(model, [b.request for b in batch], layers)
    deltas = {layer: net.transforms[str(layer)](u, d) for layer, (u, d) in found.items()}
    edit = prompt_target_batch(model, _edit_requests(batch))
    kept = []  # (ids, mask, positions compared) of the inputs that must not change
    unrelated = [p for b in batch for p in b.unrelated]
    if unrelated:
        ids, mask = model.batch_ids(unrelated)
        kept.append((ids, mask, mask))
    neighbours = [n for b in batch for n in b.neighbours]
    if neighbours:
        near = answer_batch(model, neighbours)
        kept.append((near["ids"], near["mask"], near["target_mask"].roll(-1, dims=1)))  # t - 1 predicts t
    with grad_on(model, []), model.bridge.hooks(fwd_hooks=edited_hooks(deltas)):
        l_edit = masked_target_loss(model.bridge(edit["ids"], attention_mask=edit["mask"]), edit["ids"],
                                    edit["target_mask"])
        edited = [model.bridge(ids, attention_mask=mask) for ids, mask, _ in kept]
    l_loc = torch.zeros((), device=model.device)
    for (ids, mask, where), after in zip(kept, edited, strict=True):
        l_loc = l_loc + _kl_base_edited(model.logits(ids, mask), after, where)
    return {"loss": c_edit * l_edit + l_loc, "edit": l_edit, "locality": l_loc}


def train(model, examples: Sequence[TrainingEdit], out_dir: str | Path, config: MENDConfig,
          progress: Callable[[int, int, dict], None] | None = None) -> dict[str, Any]:
    """Train (or resume training) a MEND hypernetwork for `model` into `out_dir`; returns a summary."""
    if len(examples) < config.batch_size:
        raise KelocateError(f"MEND training needs at least {config.batch_size} edits (the batch size), got "
                            f"{len(examples)}")
    out = Path(out_dir)
    config.layers = [model.check_layer(layer) for layer in config.layers]
    config.fingerprint, config.d_model, config.d_mlp = model.fingerprint, model.d_model, model.d_mlp
    torch.manual_seed(config.seed)
    net = Hypernetwork(config).to(model.device)
    optimiser = torch.optim.Adam(net.parameters(), lr=config.lr)
    rng, log, start = random.Random(config.seed), [], 0
    folder = Checkpoints(out, CONFIG, CHECKPOINT, "MEND")
    state = folder.resume({"fingerprint": model.fingerprint, "layers": config.layers})
    if state is not None:
        net.load_state_dict(state["net"])
        optimiser.load_state_dict(state["optimiser"])
        folder.restore_random(state, rng)
        start, log = int(state["step"]), list(state["log"])
    net.train()
    began = time.perf_counter()
    for step in range(start, config.steps):
        batch = rng.sample(list(examples), config.batch_size)
        losses = training_step(model, net, batch, config.c_edit)
        optimiser.zero_grad()
        losses["loss"].backward()
        optimiser.step()
        row = loss_row(step + 1, losses)
        log.append(row)
        if progress is not None:
            progress(step + 1, config.steps, row)
        if (step + 1) % config.save_every == 0 or step + 1 == config.steps:
            net.config.trained_steps = step + 1
            folder.save({"net": net.state_dict(), "optimiser": optimiser.state_dict(), "step": step + 1},
                        asdict(net.config), {f"net/{k}": v for k, v in net.state_dict().items()}, rng, log)
    net.eval()
    return {"out": str(out), "resumed_from": start, "steps": config.steps, "seconds": time.perf_counter() - began,
            "first": log[0] if log else None, "last": log[-1] if log else None}
