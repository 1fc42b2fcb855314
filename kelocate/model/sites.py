"""One vocabulary of intervention sites, and the hooking and patching API built on it.

Every method names the places it reads or changes with the same words; `site(kind, layer)` maps them to
TransformerLens 4 hook names on the bridge, and the block runner (`stack.py`) takes its edits under the
same words:

| site | hook | what it is |
| --- | --- | --- |
| embed | hook_embed | token embeddings (the corruption site of causal tracing) |
| resid_pre | blocks.{l}.hook_resid_pre | the input of block l |
| hidden | blocks.{l}.hook_resid_post | the output of block l |
| attn | blocks.{l}.hook_attn_out | attention output added to the residual |
| mlp | blocks.{l}.hook_mlp_out | MLP output added to the residual |
| mlp_post (key) | blocks.{l}.mlp.hook_post | the input of down_proj: an editor's key, a knowledge neuron's activation |
| attn_scores | blocks.{l}.attn.hook_attn_scores | attention scores before the softmax [batch, head, query, key] |
| attn_pattern | blocks.{l}.attn.hook_pattern | attention probabilities |

- `Patch(hook, value, positions, rows)`: set the activation at a hook (selected positions / batch rows) to
  `value` (a tensor broadcast to the selection, or a float), or to `value(current)` when it is a function.
  Written in place (whatever else holds that activation tensor sees the change); `differentiable=True`
  writes out of place: the activation itself is left as it was, and gradients reach both it and the value
  (editors that optimise what they write, integrated gradients' scaled activations).
- `patching(model, patches)`: a context manager; every forward of `model.bridge` inside it is patched.
- `run_patched(model, inputs, patches, answer=None)`: logits, or the answer's probability per batch row.
- `read(model, ids, mask, hooks, stop=..., on=..., detach=...)`: THE reader. One forward that records the
  activations at `hooks` (or hands each to `on(hook, x)` as it comes, e.g. to fold it into running sums),
  optionally ending the forward once the last of them is read (`stop=True`: nothing above the deepest site
  is computed), and returns the logits; with no hooks it is a plain forward, and `detach=False` keeps the
  graph (gradients). Everything that reads activations while it runs the model itself (key statistics,
  trained editors' routers and gradient factors, the reference loops of tracing and integrated gradients)
  reads through it, inside `patching` where it also writes.
- `cache_activations(model, inputs, hooks)`: `read` on texts: activations of a padded batch, with its
  attention mask.

No code outside `model/` attaches a hook of its own: it writes with a `Patch` and reads with `read`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch

from kelocate.errors import KelocateError

Index = int | slice | Sequence[int] | None
Value = torch.Tensor | float | Callable[[torch.Tensor], torch.Tensor]

LAYER_SITES = {
    "resid_pre": "hook_resid_pre",
    "hidden": "hook_resid_post",
    "resid_post": "hook_resid_post",
    "attn": "hook_attn_out",
    "mlp": "hook_mlp_out",
    "mlp_post": "mlp.hook_post",
    "key": "mlp.hook_post",
    "attn_scores": "attn.hook_attn_scores",
    "attn_pattern": "attn.hook_pattern",
}
SITES = ("embed", *LAYER_SITES)


def site(kind: str, layer: int | None = None) -> str:
    """Hook name of a site: site('mlp', 3) == 'blocks.3.hook_mlp_out'; site('embed') == 'hook_embed'."""
    if kind == "embed":
        return "hook_embed"
    if kind not in LAYER_SITES:
        raise KelocateError(f"unknown site {kind!r}; use one of {', '.join(SITES)}")
    if layer is None:
        raise KelocateError(f"site {kind!r} needs a layer")
    return f"blocks.{int(layer)}.{LAYER_SITES[kind]}"


@dataclass(frozen=True)
class Patch:
    """Replace (tensor / float) or edit (function) the activation at `hook` for some positions and rows.

    hook: a hook name (`site('mlp', 3)`). positions / rows: an int, a slice, a list, or None (all). With
    lists for both, every (row, position) pair of the two lists is patched. A tensor value broadcasts to
    the selection, e.g. a [d_model] vector, or ``clean_cache[name][:, 4]`` for `positions=4`.
    """

    hook: str
    value: Value
    positions: Index = None
    rows: Index = None
    differentiable: bool = False  # write out of place: gradients flow through the activation and the value

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """Patch activation `x` [batch, pos, ...] in place and return it (out of place when `differentiable`)."""
        if self.differentiable:
            return self._apply_out_of_place(x)
        key = _key(self.rows, self.positions)
        current = x[key]
        if callable(self.value):
            new = self.value(current)
        else:
            new = torch.as_tensor(self.value, dtype=x.dtype, device=x.device)
        x[key] = new.to(dtype=x.dtype, device=x.device).expand_as(current)
        return x

    def _apply_out_of_place(self, x: torch.Tensor) -> torch.Tensor:
        if self.rows is None and self.positions is None:  # the whole activation: value(x) itself is the output
            new = self.value(x) if callable(self.value) else torch.as_tensor(self.value, dtype=x.dtype,
                                                                              device=x.device)
            new = new.to(dtype=x.dtype, device=x.device)
            return new if new.shape == x.shape else new.expand_as(x)
        out = x.clone()
        key = _key(self.rows, self.positions)
        current = out[key]
        new = self.value(x[key]) if callable(self.value) else torch.as_tensor(self.value, dtype=x.dtype,
                                                                              device=x.device)
        out[key] = new.to(dtype=x.dtype, device=x.device).expand_as(current)
        return out


def _key(rows: Index, positions: Index) -> tuple:
    r = slice(None) if rows is None else rows
    p = slice(None) if positions is None else positions
    if isinstance(r, Sequence) and isinstance(p, Sequence):  # outer product, not pairwise
        return torch.as_tensor(list(r))[:, None], torch.as_tensor(list(p))[None, :]
    return (list(r) if isinstance(r, Sequence) else r), (list(p) if isinstance(p, Sequence) else p)


def _hooks(patches: Sequence[Patch]) -> list[tuple[str, Callable]]:
    def make(patch: Patch) -> Callable:
        def hook(x: torch.Tensor, hook) -> torch.Tensor:
            return patch.apply(x)

        return hook

    return [(p.hook, make(p)) for p in patches]


def _check_hooks(model, names: Sequence[str]) -> None:
    if not names:
        return
    known = model.bridge.hook_dict
    missing = [n for n in names if n not in known]
    if missing:
        raise KelocateError(f"unknown hook point {missing[0]!r}; use names like {site('mlp', 0)!r} (see site())")


@contextlib.contextmanager
def patching(model, patches: Sequence[Patch]) -> Iterator:
    """Inside the block, every forward of `model.bridge` (e.g. `model.top_k(...)`) runs with `patches`."""
    _check_hooks(model, [p.hook for p in patches])
    with model.bridge.hooks(fwd_hooks=_hooks(patches)):
        yield model


def inputs_to_ids(model, inputs: str | Sequence[str] | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """ids [batch, pos] and attention mask from a prompt, a list of prompts (right-padded) or ids."""
    if isinstance(inputs, torch.Tensor):
        ids = (inputs[None] if inputs.dim() == 1 else inputs).to(model.device)
        return ids, torch.ones_like(ids)
    if isinstance(inputs, str):
        inputs = [inputs]
    if not inputs:
        raise KelocateError("no inputs given; pass a prompt, a list of prompts or token ids")
    return model.batch_ids(list(inputs))


def _answer_ids(model, prompts: Sequence[str] | None, answer, batch: int) -> torch.Tensor:
    answers = answer if isinstance(answer, list | tuple) else [answer] * batch
    if len(answers) != batch:
        raise KelocateError(f"got {len(answers)} answers for a batch of {batch}")
    out = []
    for i, a in enumerate(answers):
        if isinstance(a, int):
            out.append(a)
        elif prompts is None:
            raise KelocateError("a text answer needs text prompts; pass token ids as answers for id inputs")
        else:
            out.append(model.answer_ids(prompts[i], a)[0])
    return torch.tensor(out, dtype=torch.long)


@torch.no_grad()
def run_patched(
    model,
    inputs: str | Sequence[str] | torch.Tensor,
    patches: Sequence[Patch] = (),
    answer: str | int | Sequence[str | int] | None = None,
) -> torch.Tensor:
    """Run with `patches`: logits [batch, pos, vocab], or with `answer` the probability of the answer's
    (first) token after the last real token of each row [batch]. Prompts of unequal length are padded.
    """
    ids, mask = inputs_to_ids(model, inputs)
    _check_hooks(model, [p.hook for p in patches])
    logits = model.bridge.run_with_hooks(ids, fwd_hooks=_hooks(patches), attention_mask=mask)
    if answer is None:
        return logits
    prompts = [inputs] if isinstance(inputs, str) else (None if isinstance(inputs, torch.Tensor) else list(inputs))
    target = _answer_ids(model, prompts, answer, ids.shape[0]).to(logits.device)
    last = mask.sum(dim=1) - 1
    rows = torch.arange(ids.shape[0], device=logits.device)
    probs = torch.softmax(logits[rows, last].float(), dim=-1)
    return probs[rows, target]


class ActivationCache(dict):
    """{hook name: activations [batch, pos, ...]} of a padded batch, with its attention `mask` [batch, pos]
    (1 = a real token): statistics over many texts must leave the padded positions out."""

    def __init__(self, values: dict[str, torch.Tensor], mask: torch.Tensor) -> None:
        super().__init__(values)
        self.mask = mask

    def real(self, hook: str) -> torch.Tensor:
        """The activations of `hook` at real (unpadded) positions only, flattened: [n_tokens, ...]."""
        return self[hook][self.mask.bool()]


@torch.no_grad()
def cache_activations(model, inputs: str | Sequence[str] | torch.Tensor, hooks: Sequence[str]) -> ActivationCache:
    """Activations {hook name: [batch, pos, ...]} of one (unpatched) run of a right-padded batch: `read` on
    texts, with the padding mask kept beside them."""
    ids, mask = inputs_to_ids(model, inputs)
    wanted = list(hooks)
    _, values = read(model, ids, mask, wanted)
    return ActivationCache({h: values[h] for h in wanted}, mask)


def bridge_has_hooks(bridge) -> bool:
    """Whether a hook is attached anywhere on the bridge: on a hook point (a user's `patching`, `bridge.hooks`,
    ...) or, as a PyTorch hook, on any other module of it (the wrapped HF modules). The libraries' own hooks do
    not count: those TransformerLens wires into its components on the first forward (to feed its hook points),
    and those transformers installs once outputs are captured (`output_attentions`, `output_hidden_states`)."""
    points = set(map(id, bridge.hook_dict.values()))
    for module in bridge.modules():
        hooks = [*module._forward_hooks.values(), *module._forward_pre_hooks.values(),
                 *module._backward_hooks.values(), *module._backward_pre_hooks.values()]
        if not hooks:
            continue
        if id(module) in points or any(not _wired_by_bridge(h) for h in hooks):
            return True
    return False


def _wired_by_bridge(hook) -> bool:
    """A hook TransformerLens or transformers attached to a component (not a hook point's: those are the user's)."""
    return str(getattr(hook, "__module__", "")).startswith(("transformer_lens.", "transformers."))


# ---------------------------------------------------------------------- the reader
class _StopForward(Exception):
    """Raised by the reader's last hook to end a forward once every requested site is read."""


def read(model, ids: torch.Tensor, attention_mask: torch.Tensor | None, hooks: Sequence[str], *, stop: bool = False,
         on: Callable[[str, torch.Tensor], None] | None = None,
         detach: bool = True) -> tuple[torch.Tensor | None, dict[str, torch.Tensor]]:
    """One forward of `model.bridge` on `ids` [batch, pos] that reads the activations at `hooks`.

    Returns (logits, {hook: activation}); with `on`, each activation is handed to `on(hook, x)` as the forward
    reaches it and not kept (the dict is empty). `stop=True` ends the forward right after the last of `hooks`
    is read (the deepest site: nothing above it is computed) and returns None for the logits. `detach=False`
    keeps activations in the autograd graph (gradients may flow back through them). With no `hooks` it is a
    plain forward of the bridge (its logits). Hooks and patches already attached to the bridge apply as usual
    (read inside `patching` to write in the same forward)."""
    wanted = list(dict.fromkeys(hooks))
    _check_hooks(model, wanted)
    values: dict[str, torch.Tensor] = {}
    seen: set[str] = set()

    def make(name: str) -> Callable:
        def hook(x: torch.Tensor, hook) -> None:
            kept = x.detach() if detach else x
            if on is not None:
                on(name, kept)
            else:
                values[name] = kept
            seen.add(name)
            if stop and len(seen) == len(wanted):
                raise _StopForward  # everything asked for is read: the rest of the forward is not needed

        return hook

    kwargs = {} if attention_mask is None else {"attention_mask": attention_mask}
    if not wanted:  # nothing to read: a plain forward (the reference loops run one per cell)
        return model.bridge(ids, **kwargs), values
    with model.bridge.hooks(fwd_hooks=[(name, make(name)) for name in wanted]):
        try:
            logits = model.bridge(ids, **kwargs)
        except _StopForward:
            logits = None
    return logits, values
