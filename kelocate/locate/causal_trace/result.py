"""The result of a causal trace: restored-probability grids with everything needed to read them again.

Saved as two files side by side: ``NAME.json`` (prompt, tokens, subject, answer, scores, config) and
``NAME.npz`` (one [tokens x layers] grid per kind), both written atomically.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kelocate import display
from kelocate.atomic import write_text, write_with
from kelocate.errors import KelocateError
from kelocate.locate.causal_trace.problem import single_key, token_row

FORMAT = "kelocate-trace"
VERSION = 2
WINDOWS = ("single", "windowed")
LOCATED_AT = ("last_subject", "strongest_subject", "last")


@dataclass
class TraceResult:
    """Clean/corrupted scores and one grid of restored answer probabilities per kind ([tokens, layers]).

    grids: 'hidden', 'mlp', 'attn' and, when asked, 'hidden_severed_mlp' / 'hidden_severed_attn'. For mlp and
    attn, column l restores the module outputs of the window of layers around l (`config['window']`), as in
    ROME; 'mlp_single' / 'attn_single' restore layer l alone (which layer acts, not which window holds it).

    problems: why the trace locates nothing (empty when it is valid), e.g. corrupting the subject does not
    lower p(answer), or the subject ends at the last token. Editors must not take layers from such a trace.
    """

    prompt: str
    tokens: list[str]
    token_ids: list[int]
    subject: str
    subject_span: tuple[int, int]  # token range [start, end)
    answer: str  # the traced answer token, decoded
    answer_id: int
    clean_score: float
    corrupted_score: float
    grids: dict[str, np.ndarray]
    config: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def _repr_html_(self) -> str | None:
        """Shown inline in Jupyter: a figure and the key numbers (`kelocate.notebook`)."""
        return display.html("trace", self)

    # ------------------------------------------------------------------ validity
    @property
    def valid(self) -> bool:
        """Whether the trace can locate anything (see `problems`)."""
        return not self.problems

    def require_valid(self) -> TraceResult:
        """Return self, or raise a one-line KelocateError naming why its layers mean nothing."""
        if self.problems:
            raise KelocateError(f"the trace of {self.prompt!r} locates nothing: {'; '.join(self.problems)}")
        return self

    # ------------------------------------------------------------------ reading
    @property
    def kinds(self) -> list[str]:
        return list(self.grids)

    @property
    def base_kinds(self) -> list[str]:
        """The kinds traced, without their single-layer companions."""
        return [k for k in self.grids if not k.endswith("_single")]

    @property
    def n_layers(self) -> int:
        return int(next(iter(self.grids.values())).shape[1])

    def grid(self, kind: str) -> np.ndarray:
        if kind not in self.grids:
            raise KelocateError(f"this trace has no {kind!r} grid; it has {', '.join(self.grids)}")
        return self.grids[kind]

    def indirect_effect(self, kind: str) -> np.ndarray:
        """Restored minus corrupted probability, [tokens, layers]."""
        return self.grid(kind) - self.corrupted_score

    def token_index(self, token: str | int = "last_subject") -> int:
        """Row of a token: 'last_subject', 'first_subject', 'last' or an index (negative: from the end)."""
        return token_row(token, self.subject_span, len(self.tokens))

    def window_grid(self, kind: str, window: str = "single") -> np.ndarray:
        """The grid of `kind` with `window` 'single' (one layer restored; the default an editor needs) or
        'windowed' (ROME's window). Hidden and severed kinds restore one layer's output either way."""
        if window not in WINDOWS:
            raise KelocateError(f"unknown window {window!r}; use single or windowed")
        if window == "windowed" or kind.startswith("hidden") or kind.endswith("_single"):
            return self.grid(kind)
        if single_key(kind) in self.grids:
            return self.grids[single_key(kind)]
        if self.config.get("window") == 1:
            return self.grid(kind)
        raise KelocateError(f"this trace has no single-layer {kind!r} grid; trace again with single_layer=True "
                            "or ask for window='windowed'")

    def top_layers(self, kind: str = "mlp", k: int = 1, token: str | int = "last_subject",
                   window: str = "single") -> list[int]:
        """The k layers whose restoration at `token` recovers the answer most (best first; ties: lower layer).

        window 'single' (default) ranks layers restored alone; 'windowed' ranks the centres of ROME's
        windows, which can name a layer several away from the one that acts.
        """
        row = self.window_grid(kind, window)[self.token_index(token)]
        order = np.lexsort((np.arange(row.shape[0]), -np.nan_to_num(row, nan=-np.inf)))
        return [int(i) for i in order[: max(1, k)]]

    def peak(self, kind: str, where: str = "subject") -> tuple[int, int, float]:
        """(token, layer, restored probability) of the strongest cell among the subject tokens ('subject') or
        all tokens ('all')."""
        grid = self.grid(kind)
        lo, hi = self.subject_span if where == "subject" else (0, grid.shape[0])
        sub = np.nan_to_num(grid[lo:hi], nan=-np.inf)  # rows a restricted trace left out never win
        token, layer = np.unravel_index(int(np.argmax(sub)), sub.shape)
        return int(token) + lo, int(layer), float(sub[token, layer])

    def located(self, k: int = 3) -> dict[str, dict[str, Any]]:
        """Per kind (single-layer companions included), the top-k layers at the last subject token, at the
        subject token with the strongest effect, and at the last token, each with its effect.

        Empty for an invalid trace: its layers mean nothing.
        """
        if not self.valid:
            return {}
        out: dict[str, dict[str, Any]] = {}
        for kind in self.grids:
            effect = self.indirect_effect(kind)
            strongest = self.peak(kind)[0]
            rows = {"last_subject": self.token_index("last_subject"), "strongest_subject": strongest,
                    "last": self.token_index("last")}
            out[kind] = {}
            for where, row in rows.items():
                if np.isnan(effect[row]).all():
                    continue
                layers = self.top_layers(kind, k, row, window="windowed")
                out[kind][where] = {"token": row, "label": self.tokens[row], "layers": layers,
                                    "effect": float(effect[row, layers[0]])}
        return out

    def to_location(self, kind: str = "mlp", token: str | int = "last_subject"):
        """This trace as a KLoB `Location`: per-layer indirect effects at `token`."""
        from kelocate.locate.location import Location

        row = self.indirect_effect(kind)[self.token_index(token)]
        return Location(
            layer_scores=row.astype(float),
            meta={"locator": "causal_trace", "kind": kind, "token": token, "answer": self.answer},
        )

    # ------------------------------------------------------------------ saving
    def summary(self) -> dict[str, Any]:
        """Everything but the grids, JSON-ready."""
        return {
            "format": FORMAT,
            "version": VERSION,
            "prompt": self.prompt,
            "tokens": self.tokens,
            "token_ids": self.token_ids,
            "subject": self.subject,
            "subject_span": list(self.subject_span),
            "answer": self.answer,
            "answer_id": self.answer_id,
            "clean_score": self.clean_score,
            "corrupted_score": self.corrupted_score,
            "kinds": self.kinds,
            "valid": self.valid,
            "problems": self.problems,
            "located": self.located(3),
            "config": self.config,
            "notes": self.notes,
        }

    def to_dict(self) -> dict[str, Any]:
        """Summary plus grids as nested lists (for --json)."""
        out = self.summary()
        out["grids"] = {k: np.round(v, 6).tolist() for k, v in self.grids.items()}
        return out

    def save(self, path: str | os.PathLike) -> tuple[Path, Path]:
        """Write NAME.json and NAME.npz (path may be NAME, NAME.json or NAME.npz); returns both paths."""
        stem = Path(path)
        if stem.suffix in (".json", ".npz"):
            stem = stem.with_suffix("")
        json_path, npz_path = stem.with_name(stem.name + ".json"), stem.with_name(stem.name + ".npz")
        buffer = io.BytesIO()
        np.savez(buffer, **{k: np.asarray(v, dtype=np.float64) for k, v in self.grids.items()})
        write_with(npz_path, lambda tmp: tmp.write_bytes(buffer.getvalue()))
        meta = self.summary() | {"grids_file": npz_path.name}
        write_text(json_path, json.dumps(meta, indent=1))
        return json_path, npz_path

    @classmethod
    def load(cls, path: str | os.PathLike) -> TraceResult:
        """Read a trace written by `save` (give NAME, NAME.json or NAME.npz)."""
        stem = Path(path)
        if stem.suffix in (".json", ".npz"):
            stem = stem.with_suffix("")
        json_path = stem.with_name(stem.name + ".json")
        if not json_path.is_file():
            raise KelocateError(
                f"no saved trace at {str(json_path)!r}; pass the .json written by `kelocate trace`"
            )
        try:
            meta = json.loads(json_path.read_text(encoding="utf-8"))
            if meta.get("format") != FORMAT:
                raise ValueError("not a kelocate trace file")
            with np.load(json_path.with_name(meta.get("grids_file", stem.name + ".npz"))) as data:
                grids = {k: np.asarray(data[k]) for k in meta["kinds"]}
            return cls(
                meta["prompt"],
                list(meta["tokens"]),
                [int(i) for i in meta["token_ids"]],
                meta["subject"],
                (int(meta["subject_span"][0]), int(meta["subject_span"][1])),
                meta["answer"],
                int(meta["answer_id"]),
                float(meta["clean_score"]),
                float(meta["corrupted_score"]),
                grids,
                dict(meta.get("config", {})),
                list(meta.get("notes", [])),
                list(meta.get("problems", [])),
            )
        except (OSError, ValueError, KeyError) as exc:
            raise KelocateError(f"cannot read the trace {str(json_path)!r}: {exc}") from exc
