"""Run a Llama-family decoder stack block by block, with explicit key/value prefixes; and its guard.

The fast locating engines rely on two exact facts of a causal decoder: an intervention at (position t,
layer l) changes nothing at positions < t or layers < l. To use them we must start the computation in
the middle of the stack, for a suffix of positions only, on top of keys/values computed earlier (and
shared by a whole batch). Hugging Face's forward cannot start at a layer, and the bridge's
`start_at_layer` does not skip blocks, so this module re-expresses one block with the model's own
modules and weights (norms, projections, rotary embedding, MLP): the numbers agree with the HF forward
to float tolerance (tested), and every weight edit made through the HF model is seen here at once.

The block re-expresses Llama's maths only. `guarded_stack(model)` hands a runner out only when that is
known to hold: the model type is on an allow-list, the bridge has no hooks attached (a user's
`patching(...)` would be silently ignored here), and, once per model, the runner's logits on a probe text
equal the bridge's to a stated tolerance. Otherwise it raises `StackUnavailable` with the reason, and
the caller runs its hook-based oracle and says so.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass

import torch
from transformers.models.llama.modeling_llama import rotate_half

from kelocate.model.sites import bridge_has_hooks

# model types whose decoder block is exactly the maths of `LlamaStack.block`
SUPPORTED_MODEL_TYPES = ("llama",)
# config values that change that maths for an otherwise supported type
_UNSUPPORTED_CONFIG = {"pretraining_tp": lambda v: v not in (None, 1)}

# an optional intervention: receives the site's tensor [batch, pos, dim] and returns the tensor to use
Edit = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class KV:
    """Rotated keys and values of some positions of one layer: [batch (or 1), kv_heads, pos, head_dim]."""

    k: torch.Tensor
    v: torch.Tensor

    @property
    def length(self) -> int:
        return int(self.k.shape[2])

    def cat(self, other: KV) -> KV:
        """Append `other`'s positions (batch dims are broadcast)."""
        b = max(self.k.shape[0], other.k.shape[0])
        return KV(torch.cat([_expand_batch(self.k, b), _expand_batch(other.k, b)], dim=2),
                  torch.cat([_expand_batch(self.v, b), _expand_batch(other.v, b)], dim=2))

    def select(self, batch_index: torch.Tensor | slice, stop: int | None = None) -> KV:
        """The rows `batch_index` and positions [0, stop)."""
        return KV(self.k[batch_index, :, :stop], self.v[batch_index, :, :stop])


def _expand_batch(x: torch.Tensor, batch: int) -> torch.Tensor:
    return x if x.shape[0] == batch else x.expand(batch, *x.shape[1:])


@dataclass
class BlockOut:
    """What one block produced for the positions it ran on."""

    hidden: torch.Tensor  # block output (resid_post)
    attn_out: torch.Tensor  # attention output added to the residual
    mlp_post: torch.Tensor  # MLP key vector: input of down_proj
    mlp_out: torch.Tensor  # MLP output added to the residual
    kv: KV  # this block's keys/values for the positions it ran on

    def site(self, name: str) -> torch.Tensor:
        """The tensor of a site in `sites.py`'s vocabulary: 'hidden', 'attn', 'mlp' or 'mlp_post'."""
        return getattr(self, _FIELDS[name])


_FIELDS = {"hidden": "hidden", "attn": "attn_out", "mlp": "mlp_out", "mlp_post": "mlp_post"}


class LlamaStack:
    """Block-by-block execution of a `LlamaForCausalLM` (or a compatible Llama-family model)."""

    def __init__(self, hf_model) -> None:
        self.model = hf_model
        inner = hf_model.model
        self.layers = inner.layers
        self.embed_tokens = inner.embed_tokens
        self.norm = inner.norm
        self.rotary = inner.rotary_emb
        self.lm_head = hf_model.lm_head
        config = hf_model.config
        self.n_layers = int(config.num_hidden_layers)
        self.n_heads = int(config.num_attention_heads)
        self.n_kv_heads = int(getattr(config, "num_key_value_heads", None) or self.n_heads)
        self.head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // self.n_heads)
        self._rope_cache: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
        self._mask_cache: dict[tuple, torch.Tensor] = {}

    # ------------------------------------------------------------------ pieces
    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """Token embeddings [batch, pos, d_model] (the `hook_embed` site)."""
        return self.embed_tokens(ids)

    def unembed(self, hidden: torch.Tensor) -> torch.Tensor:
        """Final norm + LM head: logits [..., vocab]."""
        return self.lm_head(self.norm(hidden))

    def _rope(self, start: int, length: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin [length, head_dim] of positions start..start+length-1 (cached unless the rotary embedding
        rescales itself with the lengths it has seen, as 'dynamic' RoPE does)."""
        key = (start, length, like.dtype, like.device)
        if key in self._rope_cache:
            return self._rope_cache[key]
        positions = torch.arange(start, start + length, device=like.device)[None]
        cos, sin = self.rotary(like, positions)
        if "dynamic" not in str(getattr(self.rotary, "rope_type", "")):
            self._rope_cache[key] = (cos[0], sin[0])
        return cos[0], sin[0]

    @staticmethod
    def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """Rotary embedding of x [batch, pos, heads, head_dim] with cos, sin [pos, head_dim] (shared by the
        batch) or [batch, pos, head_dim] (per row) (HF's formula)."""
        cos, sin = cos.unsqueeze(-2), sin.unsqueeze(-2)
        return (x * cos) + (rotate_half(x) * sin)

    @staticmethod
    def _check_past(past: KV | None, start: int, batch: int) -> None:
        """A past must cover positions 0..start-1 and have a batch that divides the hidden batch."""
        if (past.length if past is not None else 0) != start:
            raise ValueError(f"past covers {past.length if past else 0} positions, expected {start}")
        if past is not None and batch % past.k.shape[0]:
            raise ValueError(f"past batch {past.k.shape[0]} does not divide the batch {batch}")

    @staticmethod
    def _with_past(past: KV | None, own: torch.Tensor, batch: int, values: bool = False) -> torch.Tensor:
        """Keys (or values) of all positions: the past's (tiled over the batch) followed by `own`'s."""
        if past is None:
            return own
        prefix = past.v if values else past.k
        tiles = batch // prefix.shape[0]
        if tiles == 1:
            return torch.cat([prefix, own], dim=2)
        own = own.reshape(tiles, prefix.shape[0], *own.shape[1:])
        both = torch.cat([prefix.expand(tiles, *prefix.shape), own], dim=3)
        return both.view(batch, *both.shape[2:])

    def _mask(self, queries: int, total: int, rep: int, device: torch.device) -> torch.Tensor | None:
        """Causal mask of `queries` last positions over `total` keys, each query row repeated `rep` times
        (query-major, the folded GQA layout); None when every query sees every key."""
        if queries == 1:
            return None
        key = (queries, total, rep, device)
        if key not in self._mask_cache:
            mask = torch.ones(queries, total, dtype=torch.bool, device=device).tril(diagonal=total - queries)
            self._mask_cache[key] = mask.repeat_interleave(rep, dim=0)
        return self._mask_cache[key]

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, past: KV | None,
                scale: float, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Attention output [batch, queries, heads * head_dim] of rotated q [batch, queries, heads, hd]
        over the past keys/values and this call's k, v [batch, kv_heads, length, hd].

        Grouped queries are folded into their key/value head (no repeat of keys): the `rep` heads sharing a
        kv head become rep x queries rows of one attention problem. `key_mask` [batch, total] (True = a real
        key) hides the padding of a ragged past from every query of its row."""
        batch, queries = q.shape[0], q.shape[1]
        rep = self.n_heads // self.n_kv_heads
        keys, values = self._with_past(past, k, batch), self._with_past(past, v, batch, values=True)
        total = keys.shape[2]
        folded = q.reshape(batch, queries, self.n_kv_heads, rep, self.head_dim).transpose(1, 2)
        folded = folded.reshape(batch, self.n_kv_heads, queries * rep, self.head_dim)
        mask = self._mask(queries, total, rep, q.device)
        if key_mask is not None:
            rows = key_mask[:, None, None, :]
            mask = rows if mask is None else mask & rows
        ctx = torch.nn.functional.scaled_dot_product_attention(folded, keys, values, attn_mask=mask, scale=scale)
        ctx = ctx.view(batch, self.n_kv_heads, queries, rep, self.head_dim).transpose(1, 2)
        return ctx.reshape(batch, queries, self.n_heads * self.head_dim)

    def block(self, layer: int, hidden: torch.Tensor, start: int = 0, past: KV | None = None,
              edits: dict[str, Edit] | None = None, last_only: bool = False,
              positions: torch.Tensor | None = None, key_mask: torch.Tensor | None = None) -> BlockOut:
        """Run block `layer` on `hidden` [batch, T, d] holding positions start..start+T-1.

        `past` holds the same layer's keys/values for positions 0..start-1; its batch b may be 1, the batch,
        or any divisor of it (row r then uses past row r % b: cells x samples over one prefix per sample).
        `edits` may replace any of the sites 'attn', 'mlp_post', 'mlp', 'hidden' (`sites.py`) before use.
        `last_only`: keys/values for every position, but queries, attention and MLP for the last position
        alone (all the final layer needs for next-token logits); the outputs then hold that position only.
        A ragged batch (rows whose own positions start at different places, `SuffixRun`) gives each row's
        positions [batch, T] for the rotary embedding and `key_mask` [batch, start + T] for its past's padding;
        `start` is then the past's padded length.
        """
        edits = edits or {}
        self._check_past(past, start, hidden.shape[0])
        blk = self.layers[layer]
        attn = blk.self_attn
        batch, length, _ = hidden.shape
        x = blk.input_layernorm(hidden)
        cos, sin = self._rope(start, length, hidden) if positions is None else self.rotary(hidden, positions)
        k = self._rotate(attn.k_proj(x).view(batch, length, self.n_kv_heads, self.head_dim), cos, sin).transpose(1, 2)
        v = attn.v_proj(x).view(batch, length, self.n_kv_heads, self.head_dim).transpose(1, 2)
        if last_only:  # queries and everything after attention: the last position alone
            hidden, x, cos, sin = hidden[:, -1:], x[:, -1:], cos[..., -1:, :], sin[..., -1:, :]
        queries = x.shape[1]
        q = self._rotate(attn.q_proj(x).view(batch, queries, self.n_heads, self.head_dim), cos, sin)
        attn_out = attn.o_proj(self._attend(q, k, v, past, attn.scaling, key_mask))
        if "attn" in edits:
            attn_out = edits["attn"](attn_out)
        mid = hidden + attn_out
        mlp = blk.mlp
        y = blk.post_attention_layernorm(mid)
        mlp_post = mlp.act_fn(mlp.gate_proj(y)) * mlp.up_proj(y)
        if "mlp_post" in edits:
            mlp_post = edits["mlp_post"](mlp_post)
        mlp_out = mlp.down_proj(mlp_post)
        if "mlp" in edits:
            mlp_out = edits["mlp"](mlp_out)
        out = mid + mlp_out
        if "hidden" in edits:
            out = edits["hidden"](out)
        return BlockOut(out, attn_out, mlp_post, mlp_out, KV(k, v))

    # ------------------------------------------------------------------ whole runs
    def run(self, embeds: torch.Tensor, first_layer: int = 0, start: int = 0,
            pasts: list[KV] | None = None,
            edits: Callable[[int], dict[str, Edit] | None] | None = None,
            keep: bool = True) -> tuple[torch.Tensor, list[BlockOut]]:
        """Run blocks first_layer..n_layers-1 on `embeds` (the input of `first_layer`, positions from `start`).

        `pasts[l]` is layer l's key/value prefix (positions < start); `edits(l)` gives the edits of block l.
        Returns the final hidden state (before the final norm) and, when `keep`, every block's outputs.
        """
        hidden = embeds
        outs: list[BlockOut] = []
        for layer in range(first_layer, self.n_layers):
            past = None if pasts is None else pasts[layer]
            out = self.block(layer, hidden, start, past, edits(layer) if edits else None)
            hidden = out.hidden
            if keep:
                outs.append(out)
        return hidden, outs


class SuffixRun:
    """Rows of a right-padded batch run again and again from their own position on, above one layer.

    An optimisation that changes one site at one position per row (an editor's delta at the subject's last
    token) changes nothing before that position and nothing below that layer. So the rows run once in full
    (no gradient), and what later runs need is kept: each layer's keys/values of the positions before the
    row's own start (left-padded to one length, with a key mask), and the input of `first_layer` at the
    positions from the start on (left-aligned, right-padded). `run` then computes blocks first_layer..last
    for those positions only, with edits; index `i` of a row's output is its position `starts[r] + i`.
    """

    def __init__(self, stack: LlamaStack, ids: torch.Tensor, lengths: torch.Tensor, starts: torch.Tensor,
                 first_layer: int) -> None:
        self.stack, self.first_layer = stack, first_layer
        batch, device = ids.shape[0], ids.device
        past_len = int(starts.max())  # P: the longest prefix
        own_len = int((lengths - starts).max())  # S: the longest own part
        self.past_len = past_len
        columns = torch.arange(past_len, device=device)[None]
        offset = (past_len - starts)[:, None]  # row r's prefix sits at columns P - start_r .. P - 1
        past_index = (columns - offset).clamp(min=0)
        own_positions = starts[:, None] + torch.arange(own_len, device=device)[None]
        # a short row's padding slots repeat its last position (never read; no position beyond the text, so a
        # rotary embedding that rescales with the lengths it sees sees the real ones only)
        self.positions = torch.minimum(own_positions, (lengths - 1).clamp(min=0)[:, None])
        self.key_mask = torch.cat([columns >= offset, torch.ones(batch, own_len, dtype=torch.bool, device=device)],
                                  dim=1)
        with torch.no_grad():
            hidden = stack.embed(ids)
            self.pasts: dict[int, KV] = {}
            for layer in range(stack.n_layers):
                if layer == first_layer:
                    self.inputs = _take(hidden, self.positions)
                out = stack.block(layer, hidden)
                if layer >= first_layer:
                    self.pasts[layer] = KV(_take_kv(out.kv.k, past_index), _take_kv(out.kv.v, past_index))
                hidden = out.hidden

    def run(self, edits: Callable[[int], dict[str, Edit] | None] | None = None) -> torch.Tensor:
        """The final hidden state (before the final norm) of every row's own positions [batch, S, d_model]."""
        hidden = self.inputs
        for layer in range(self.first_layer, self.stack.n_layers):
            hidden = self.stack.block(layer, hidden, self.past_len, self.pasts[layer], edits(layer) if edits else None,
                                      positions=self.positions, key_mask=self.key_mask).hidden
        return hidden


def _take(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x [batch, pos, d] at positions index [batch, n] per row: [batch, n, d]."""
    return x.gather(1, index[:, :, None].expand(-1, -1, x.shape[-1]))


def _take_kv(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Keys or values x [batch, heads, pos, hd] at positions index [batch, n] per row: [batch, heads, n, hd]."""
    return x.gather(2, index[:, None, :, None].expand(-1, x.shape[1], -1, x.shape[-1]))


# ---------------------------------------------------------------------- the guard
class StackUnavailable(Exception):
    """The block runner cannot be trusted for this model; the message says why."""


_PLAIN: ContextVar[bool] = ContextVar("kelocate_plain_paths", default=False)


@contextlib.contextmanager
def plain_paths() -> Iterator[None]:
    """Inside the block every fast path stands down and the plain loops run: the bridge for every forward, no
    key/value cache, no block runner (tracing's oracle, target optimisation through whole forwards). For
    checking a number against the reference, and for the benchmarks' "plain" column."""
    token = _PLAIN.set(True)
    try:
        yield
    finally:
        _PLAIN.reset(token)


def plain_paths_asked() -> bool:
    """Whether the caller is inside `plain_paths()`."""
    return _PLAIN.get()


PROBE_TEXT = "The quick brown fox jumps over the lazy dog. Paris is the capital of France, and SMAP"


def stack_tolerance(logits: torch.Tensor) -> float:
    """Largest |stack - bridge| logit difference accepted, for logits of this dtype and size.

    Both sides run the same weights with the same operations in another order (fused attention vs
    eager, batching), so they differ by rounding: a few units of the dtype's epsilon per accumulation,
    relative to the logits' magnitude. 1e-4 x (1 + max |logit|) for float32 (epsilon 1.2e-7, so about
    800 ulps of headroom at a logit of 10); 16-bit types (epsilon 1e-3 to 8e-3) get 5e-2 x (1 + max).
    """
    scale = 1.0 + float(logits.abs().max())
    return (1e-4 if logits.dtype in (torch.float32, torch.float64) else 5e-2) * scale


def probe_gap(model, forward: Callable[[torch.Tensor], torch.Tensor]) -> tuple[float, float]:
    """(largest |forward - bridge| logit difference on the probe text, the tolerance `stack_tolerance` allows):
    how the block runner and the plain HF twin are each checked once per model before they stand in."""
    ids = model.encode(PROBE_TEXT).ids.to(model.device)[None]
    with torch.no_grad():
        reference = model.bridge(ids)
        mine = forward(ids)
    return float((mine.float() - reference.float()).abs().max()), stack_tolerance(reference)


def _check_equivalence(model) -> None:
    """Raise StackUnavailable unless the runner's logits match the bridge's on the probe text."""
    stack = LlamaStack(model.hf)
    diff, tol = probe_gap(model, lambda ids: stack.unembed(stack.run(stack.embed(ids), keep=False)[0]))
    if not diff <= tol:
        raise StackUnavailable(
            f"its logits differ from the bridge's by {diff:.2g} on a probe text (tolerance {tol:.2g})")


def guarded_stack(model) -> LlamaStack:
    """A `LlamaStack` for `model` when its maths are known to be Llama's, else StackUnavailable(reason).

    The equivalence check runs once per model (the result is kept on the model object; a weight edit does
    not change the maths, so it stays valid).
    """
    if plain_paths_asked():
        raise StackUnavailable("the plain paths were asked for (`plain_paths()`)")
    model_type = str(getattr(model.hf.config, "model_type", ""))
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise StackUnavailable(
            f"model type {model_type!r} is not one whose maths the block runner implements "
            f"({', '.join(SUPPORTED_MODEL_TYPES)})")
    for key, bad in _UNSUPPORTED_CONFIG.items():
        value = getattr(model.hf.config, key, None)
        if bad(value):
            raise StackUnavailable(f"config {key}={value!r} changes the block's maths")
    if bridge_has_hooks(model.bridge):
        raise StackUnavailable("hooks are attached to the bridge, and only the hook-based path honours them")
    verdict = getattr(model, "_stack_verdict", None)
    if verdict is None:
        try:
            _check_equivalence(model)
            verdict = ""
        except (StackUnavailable, AttributeError, RuntimeError, TypeError) as exc:
            verdict = str(exc) if isinstance(exc, StackUnavailable) else f"its layout differs ({exc})"
        model._stack_verdict = verdict
    if verdict:
        raise StackUnavailable(verdict)
    return LlamaStack(model.hf)
