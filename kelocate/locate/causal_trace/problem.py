"""What a causal-trace engine computes and returns (shared by the fast engine and the oracle).

Semantics (ROME, Meng et al. 2022): S corrupted runs add (or, with `replace`, substitute) the given noise to
the subject's token embeddings at `hook_embed`; a cell (token t, layer l) restores clean activations in all S
runs at once and scores the mean probability of the answer token at the last position.

- hidden: the block output (resid_post) of layer l at token t.
- mlp / attn: the module outputs at token t of every layer in `window_range(l, window, n_layers)`.
- severed `site`: hidden restoration at (t, l) while the `site` ('mlp' or 'attn') outputs at token t of all
  later layers keep their corrupted values (ROME's frozen-MLP/attention experiment, for MEMIT's layer range).

The grid names (`severed_key`, `single_key`) and token rows (`token_row`) live here, below both the engines
and `result.py`, so that imports go one way: engines and result -> problem.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from kelocate.errors import KelocateError

KINDS = ("hidden", "mlp", "attn")
SEVERABLE = ("mlp", "attn")
TOKEN_CHOICES = ("last_subject", "first_subject", "last")


def token_row(token: str | int, span: tuple[int, int], n_tokens: int) -> int:
    """Row of a token: 'last_subject', 'first_subject', 'last' or an index (negative: from the end)."""
    named = {"last_subject": span[1] - 1, "first_subject": span[0], "last": n_tokens - 1}
    if isinstance(token, str) and token in named:
        return named[token]
    try:
        index = int(token)
    except (TypeError, ValueError):
        raise KelocateError(f"unknown token {token!r}; use {', '.join(TOKEN_CHOICES)} or an index") from None
    if not -n_tokens <= index < n_tokens:
        raise KelocateError(f"token index {index} is outside the prompt's {n_tokens} tokens")
    return index % n_tokens


def severed_key(site: str) -> str:
    """Grid name of the hidden-state trace with `site` ('mlp' or 'attn') severed."""
    return f"hidden_severed_{site}"


def single_key(kind: str) -> str:
    """Grid name of the single-layer (window 1) trace of a windowed kind ('mlp' or 'attn')."""
    return f"{kind}_single"


def window_range(layer: int, window: int, n_layers: int) -> range:
    """Layers restored for a windowed cell centred on `layer`: [layer - w//2, layer + ceil(w/2)), clipped."""
    return range(max(0, layer - window // 2), min(n_layers, layer - (-window // 2)))


def default_window(n_layers: int) -> int:
    """ROME's 10 layers at GPT-J's depth (28) scaled to the model's depth: clip(round(10 L / 28), 1, 10)."""
    return int(min(10, max(1, round(10 * n_layers / 28))))


@dataclass(frozen=True)
class TraceProblem:
    """One prompt to trace. `noise` is already scaled: [samples, subject tokens, d_model] (float32)."""

    ids: torch.Tensor  # [T] token ids (with BOS when the model uses one)
    span: tuple[int, int]  # subject token range [start, end)
    answer_id: int
    noise: torch.Tensor
    replace: bool = False
    kinds: tuple[str, ...] = KINDS
    severed: tuple[str, ...] = ()
    window: int = 1
    rows: tuple[int, ...] | None = None  # token rows to compute (None: all); the others stay NaN

    def __post_init__(self) -> None:
        start, end = self.span
        if not 0 <= start < end <= int(self.ids.shape[0]):
            raise KelocateError(
                f"subject span {self.span} is outside the prompt's {int(self.ids.shape[0])} tokens"
            )
        if self.noise.dim() != 3 or self.noise.shape[1] != end - start:
            raise ValueError(
                f"noise must be [samples, {end - start}, d_model], got {tuple(self.noise.shape)}"
            )
        bad = [k for k in self.kinds if k not in KINDS] + [s for s in self.severed if s not in SEVERABLE]
        if bad:
            raise KelocateError(f"unknown trace kind {bad[0]!r}; use {', '.join(KINDS)} (severed: mlp, attn)")
        if self.window < 1:
            raise KelocateError(f"the window must be at least 1 layer, got {self.window}")
        if self.rows is not None and not all(0 <= t < int(self.ids.shape[0]) for t in self.rows):
            raise KelocateError(f"token rows {self.rows} are outside the prompt's {int(self.ids.shape[0])} tokens")

    @property
    def samples(self) -> int:
        return int(self.noise.shape[0])

    @property
    def n_tokens(self) -> int:
        return int(self.ids.shape[0])

    def computed_rows(self) -> list[int]:
        """The token rows an engine fills in (all of them unless `rows` restricts them)."""
        return list(range(self.n_tokens)) if self.rows is None else sorted(set(self.rows))

    def empty_grid(self, n_layers: int, fill: float) -> np.ndarray:
        """A [tokens, layers] grid: `fill` on computed rows, NaN on rows left out."""
        grid = np.full((self.n_tokens, n_layers), np.nan)
        grid[self.computed_rows()] = fill
        return grid

    def grid_keys(self) -> list[str]:
        return list(self.kinds) + [severed_key(s) for s in self.severed]


@dataclass
class Grids:
    """An engine's answer: clean and corrupted scores and one [tokens, layers] grid per key."""

    clean: float
    corrupted: float
    grids: dict[str, np.ndarray]


def corrupt_embeddings(
    embeds: torch.Tensor, noise: torch.Tensor, span: tuple[int, int], replace: bool
) -> torch.Tensor:
    """Corrupt the subject rows of `embeds` [rows, T, d] in place with `noise` [rows, n_subject, d]."""
    start, end = span
    draws = noise.to(device=embeds.device, dtype=embeds.dtype)
    if replace:
        embeds[:, start:end] = draws
    else:
        embeds[:, start:end] += draws
    return embeds


def answer_probs(logits: torch.Tensor, answer_id: int) -> torch.Tensor:
    """Probability of the answer from last-position logits [rows, vocab] (softmax in float32)."""
    return torch.softmax(logits.float(), dim=-1)[:, answer_id]
