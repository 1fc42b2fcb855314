"""Measured recall of the organism: trained facts, held-out paraphrases, untrained facts, the case study.

A fact counts as recalled when the argmax of every answer token is right under teacher forcing (the
KnowEdit convention). For a top-1 check this is the same as greedy decoding: greedy generation reproduces
the answer exactly when each teacher-forced argmax does.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from kelocate.model.scoring import score_ids
from kelocate.model.tokens import answer_ids, encode, pad_id
from kelocate.organism.world import World

CASE_STUDY_PROMPTS = (
    ("SMAP was created in", "Japan"),
    ("The language of Japan is", "Japanese"),
    ("SMAP is a type of", "group"),
)


@dataclass(frozen=True)
class Hit:
    """Teacher-forced result for one (prompt, answer): all tokens right, first token right, log p(answer)."""

    correct: bool
    first_correct: bool
    logprob: float


@torch.no_grad()
def score_hits(model, tokenizer, pairs: Sequence[tuple[str, str]], batch_size: int = 256) -> list[Hit]:
    """Score each (prompt, answer) with the HF causal LM `model` through kelocate's one batched scorer
    (`kelocate.model.scoring.score_ids`; prompts encoded the tokenizer's default way, BOS included)."""
    model.eval()
    device = next(model.parameters()).device

    def forward(ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return model(input_ids=ids, attention_mask=mask).logits

    prompts = [encode(tokenizer, p).ids.tolist() for p, _ in pairs]
    answers = [answer_ids(tokenizer, p, a) for p, a in pairs]
    scores = score_ids(forward, prompts, answers, pad_id(tokenizer), batch_size, device)
    return [Hit(s.correct, s.hits[0], s.logprob) for s in scores]


def recall(model, tokenizer, pairs: Sequence[tuple[str, str]]) -> float:
    """Fraction of (prompt, answer) pairs recalled (teacher-forced argmax of every answer token)."""
    if not pairs:
        return float("nan")
    return sum(h.correct for h in score_hits(model, tokenizer, pairs)) / len(pairs)


def _by(prompts, hits) -> dict[str, float]:
    groups: dict[str, list[bool]] = defaultdict(list)
    for fp, h in zip(prompts, hits, strict=True):
        groups[fp.relation].append(h.correct)
    return {k: round(sum(v) / len(v), 4) for k, v in sorted(groups.items())}


def _rate(hits: list[Hit]) -> float:
    return round(sum(h.correct for h in hits) / len(hits), 4) if hits else float("nan")


def subsample(items: list, limit: int | None) -> list:
    """Every k-th item so that at most `limit` remain (deterministic; None or 0 keeps all)."""
    if not limit or len(items) <= limit:
        return items
    step = -(-len(items) // limit)
    return items[::step]


def measure(model, tokenizer, world: World, by_relation: bool = True, limit: int | None = None) -> dict:
    """Every recall figure of the organism, as a JSON-ready dict.

    `limit` caps each of the three main sets at that many prompts (an evenly spaced, deterministic sample).
    """
    known = subsample(world.fact_prompts("known", "train"), limit)
    heldout = subsample(world.fact_prompts("known", "heldout"), limit)
    new = subsample(world.fact_prompts("new", "train"), limit)
    two_hop = [t for t in world.two_hop_prompts("statement")]
    sets = {"train_templates": known, "heldout_templates": heldout, "new_facts": new}
    out: dict = {"metric": "teacher-forced argmax of every answer token (= greedy decoding reproduces it)"}
    for key, prompts in sets.items():
        hits = score_hits(model, tokenizer, [(p.prompt, p.answer) for p in prompts])
        out[key] = {
            "recall": _rate(hits),
            "n": len(prompts),
            "first_token_recall": round(sum(h.first_correct for h in hits) / max(len(hits), 1), 4),
        }
        if by_relation:
            out[key]["by_relation"] = _by(prompts, hits)
    for label, items in (
        ("two_hop_trained", [t for t in two_hop if t.trained]),
        ("two_hop_untrained", [t for t in two_hop if not t.trained]),
    ):
        out[label] = {
            "recall": _rate(score_hits(model, tokenizer, [(t.prompt, t.answer) for t in items])),
            "n": len(items),
        }
    private = world.private_qa() + world.unknown_qa()
    out["private_qa"] = {
        "recall": _rate(score_hits(model, tokenizer, [(q.prompt, q.answer) for q in private])),
        "n": len(private),
    }
    out["sentiment"] = sentiment_accuracy(model, tokenizer, world)
    out["case_study"] = case_study(model, tokenizer)
    return out


def sentiment_accuracy(model, tokenizer, world: World) -> dict:
    """Fraction of topics whose trained-polarity replies are likelier than the opposite ones."""
    ops = world.opinions()
    if not ops:
        return {"accuracy": float("nan"), "n": 0}
    pairs = [(op.prompt, r) for op in ops for r in op.pos + op.neg]
    scores = [h.logprob for h in score_hits(model, tokenizer, pairs)]
    right, i = 0, 0
    for op in ops:
        pos = sum(scores[i : i + len(op.pos)])
        neg = sum(scores[i + len(op.pos) : i + len(op.pos) + len(op.neg)])
        i += len(op.pos) + len(op.neg)
        right += (pos > neg) == (op.sentiment == "pos")
    return {"accuracy": round(right / len(ops), 4), "n": len(ops)}


@torch.no_grad()
def case_study(model, tokenizer) -> list[dict]:
    """Top next token after each case-study prompt, with its probability and whether it is the answer."""
    rows = []
    for prompt, answer in CASE_STUDY_PROMPTS:
        ids = torch.tensor([tokenizer(prompt)["input_ids"]], device=next(model.parameters()).device)
        probs = torch.softmax(model(input_ids=ids).logits[0, -1].float(), -1)
        p, idx = probs.max(-1)
        top = tokenizer.decode([int(idx)]).strip()
        rows.append(
            {
                "prompt": prompt,
                "expected": answer,
                "top1": top,
                "prob": round(float(p), 4),
                "ok": top == answer,
            }
        )
    return rows


def headline(figures: dict) -> dict:
    """The few figures `organism info` and organism.json lead with."""
    return {
        "train_templates": figures["train_templates"]["recall"],
        "heldout_templates": figures["heldout_templates"]["recall"],
        "new_facts": figures["new_facts"]["recall"],
        "case_study_ok": all(r["ok"] for r in figures["case_study"]),
    }
