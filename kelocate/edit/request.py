"""An edit request: what to change (a subject's fact, seen through a prompt) and what it should become."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field

from kelocate.errors import KelocateError


@dataclass(frozen=True)
class EditRequest:
    """Make `prompt` (which contains `subject`) continue with `target_new` instead of `ground_truth`.

    `paraphrases` are other prompts of the same fact (used by editors that train on them, and by the
    CLI's before -> after report). The target continues the prompt after a space, as answers do
    everywhere in kelocate (`tokens.answer_ids`).
    """

    prompt: str
    subject: str
    target_new: str
    ground_truth: str | None = None
    paraphrases: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        object.__setattr__(self, "paraphrases", tuple(self.paraphrases))
        if not self.prompt.strip():
            raise KelocateError("an edit request needs a prompt; pass the text that leads to the answer")
        if not self.target_new.strip():
            raise KelocateError(f"the edit of {self.prompt!r} has an empty target; pass --target TEXT")
        if not self.subject.strip() or self.subject not in self.prompt:
            raise KelocateError(
                f"subject {self.subject!r} does not occur in prompt {self.prompt!r}; pass --subject with a "
                "span of the prompt")

    def to_json(self) -> dict:
        data = asdict(self)
        data["paraphrases"] = list(self.paraphrases)
        return data

    @classmethod
    def from_json(cls, data: Mapping) -> EditRequest:
        return cls(prompt=data["prompt"], subject=data["subject"], target_new=data["target_new"],
                   ground_truth=data.get("ground_truth"), paraphrases=tuple(data.get("paraphrases") or ()))


def fact_text(request: EditRequest) -> str:
    """The new fact as a sentence: the prompt followed by the new target (what ICE prepends and what SERAC
    stores and embeds)."""
    sep = "" if request.prompt.endswith(" ") else " "
    return f"{request.prompt}{sep}{request.target_new}"


def as_requests(requests: EditRequest | Mapping | Iterable[EditRequest | Mapping]) -> list[EditRequest]:
    """One request or many, as objects or dicts with the same fields, as a non-empty list."""
    if isinstance(requests, (EditRequest, Mapping)):
        requests = [requests]
    out = [r if isinstance(r, EditRequest) else EditRequest.from_json(r) for r in requests]
    if not out:
        raise KelocateError("no edit requests given; pass at least one (prompt, subject, target_new)")
    return out
