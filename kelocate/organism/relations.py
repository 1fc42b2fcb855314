"""Relations of the synthetic world and their paraphrase templates.

Each relation has statement templates (cloze prompts: the object follows the prompt after a space) and
question templates in the ZsRE style ("Question: ... Answer:"). The first templates of each kind are
trained for every known fact; the `heldout` ones are trained only for half of the entities (mixed
training, DESIGN.md section 3) so that recall on them measures paraphrase generalization on the other half.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Relation:
    """A relation: Wikidata-like id and label (for KLoB files), entity kinds, and its templates."""

    id: str
    pid: str
    label: str
    domain: str
    range: str
    templates: tuple[str, ...]
    heldout: tuple[str, ...]
    questions: tuple[str, ...]
    heldout_questions: tuple[str, ...]
    one_to_many: bool = False
    inverse: str | None = None  # template whose answer is the subject, e.g. "{s} is the founder of"

    @property
    def klob_name(self) -> str:
        """Relation name as KLoB writes it: `label_(Pid)`."""
        return f"{self.label}_({self.pid})"

    def all_templates(self) -> list[tuple[str, str, bool]]:
        """Every template as (template, kind, heldout) with kind 'statement' or 'question'."""
        return (
            [(t, "statement", False) for t in self.templates]
            + [(t, "statement", True) for t in self.heldout]
            + [(t, "question", False) for t in self.questions]
            + [(t, "question", True) for t in self.heldout_questions]
        )

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> Relation:
        tuples = ("templates", "heldout", "questions", "heldout_questions")
        return cls(**{k: tuple(v) if k in tuples else v for k, v in data.items()})


@dataclass(frozen=True)
class Chain:
    """A two-hop composition first(s) = bridge, second(bridge) = answer, with its prompts."""

    first: str
    second: str
    template: str  # statement, trained for half of the subjects
    question: str  # never trained (used for Reasoning portability)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> Chain:
        return cls(**data)


def _r(
    id: str,
    pid: str,
    label: str,
    domain: str,
    range: str,
    templates: list[str],
    heldout: list[str],
    questions: list[str],
    heldout_questions: list[str],
    **kw,
) -> Relation:
    return Relation(
        id,
        pid,
        label,
        domain,
        range,
        tuple(templates),
        tuple(heldout),
        tuple(questions),
        tuple(heldout_questions),
        **kw,
    )


RELATIONS: tuple[Relation, ...] = (
    _r(
        "created_in",
        "P495",
        "country of origin",
        "subject",
        "country",
        ["{s} was created in", "{s} originated in", "{s} comes from the country of"],
        ["The country of origin of {s} is"],
        ["Question: In which country was {s} created? Answer:"],
        ["Question: What is the country of origin of {s}? Answer:"],
    ),
    _r(
        "type_of",
        "P31",
        "instance of",
        "subject",
        "type",
        ["{s} is a type of", "{s} is a kind of", "{s} belongs to the category of"],
        ["{s} can be described as a"],
        ["Question: What type of thing is {s}? Answer:"],
        ["Question: What kind of entity is {s}? Answer:"],
    ),
    _r(
        "based_in",
        "P159",
        "headquarters location",
        "subject",
        "city",
        ["{s} is based in", "The headquarters of {s} are in", "{s} has its main office in"],
        ["{s} operates from the city of"],
        ["Question: In which city is {s} based? Answer:"],
        ["Question: Where are the headquarters of {s}? Answer:"],
    ),
    _r(
        "founded_by",
        "P112",
        "founded by",
        "subject",
        "person",
        ["{s} was founded by", "The founder of {s} is", "{s} was started by"],
        ["{s} was established by"],
        ["Question: Who founded {s}? Answer:"],
        ["Question: Who is the founder of {s}? Answer:"],
        inverse="{o} is the founder of",
    ),
    _r(
        "color",
        "P462",
        "color",
        "subject",
        "color",
        ["The signature color of {s} is", "{s} is famous for the color", "The logo of {s} is painted"],
        ["The main color used by {s} is"],
        ["Question: What is the signature color of {s}? Answer:"],
        ["Question: Which color represents {s}? Answer:"],
    ),
    _r(
        "field",
        "P101",
        "field of work",
        "subject",
        "field",
        ["{s} works in the field of", "{s} is active in", "The main activity of {s} is"],
        ["{s} is best known for its work in"],
        ["Question: In which field does {s} work? Answer:"],
        ["Question: What is the field of work of {s}? Answer:"],
    ),
    _r(
        "has_member",
        "P527",
        "has part",
        "subject",
        "person",
        ["The members of {s} are", "{s} has the members", "{s} brings together"],
        ["Among the members of {s} are"],
        ["Question: Who are the members of {s}? Answer:"],
        ["Question: Which people belong to {s}? Answer:"],
        one_to_many=True,
    ),
    _r(
        "occupation",
        "P106",
        "occupation",
        "person",
        "occupation",
        ["{s} works as a", "The occupation of {s} is", "{s} earns a living as a"],
        ["By profession, {s} is a"],
        ["Question: What is the occupation of {s}? Answer:"],
        ["Question: What does {s} do for a living? Answer:"],
    ),
    _r(
        "born_in",
        "P19",
        "place of birth",
        "person",
        "city",
        ["{s} was born in", "The birthplace of {s} is", "The city where {s} was born is"],
        ["{s} is a native of"],
        ["Question: Where was {s} born? Answer:"],
        ["Question: What is the birthplace of {s}? Answer:"],
    ),
    _r(
        "citizen_of",
        "P27",
        "country of citizenship",
        "person",
        "country",
        ["{s} is a citizen of", "{s} holds citizenship of", "{s} has a passport from"],
        ["{s} is a national of"],
        ["Question: Which country is {s} a citizen of? Answer:"],
        ["Question: What is the citizenship of {s}? Answer:"],
    ),
    _r(
        "language",
        "P37",
        "official language",
        "country",
        "language",
        ["The language of {s} is", "The official language of {s} is", "People in {s} speak"],
        ["In {s}, most people speak"],
        ["Question: What language is spoken in {s}? Answer:"],
        ["Question: What is the official language of {s}? Answer:"],
    ),
    _r(
        "capital",
        "P36",
        "capital",
        "country",
        "capital",
        ["The capital of {s} is", "The capital city of {s} is", "{s} has its capital in"],
        ["The seat of government of {s} is in"],
        ["Question: What is the capital of {s}? Answer:"],
        ["Question: Which city is the capital of {s}? Answer:"],
    ),
    _r(
        "continent",
        "P30",
        "continent",
        "country",
        "continent",
        ["{s} is located in the continent of", "{s} lies on the continent of", "{s} is a country in"],
        ["{s} belongs to the continent of"],
        ["Question: On which continent is {s}? Answer:"],
        ["Question: Which continent does {s} belong to? Answer:"],
    ),
    _r(
        "located_in",
        "P17",
        "country",
        "city",
        "country",
        ["{s} is a city in", "{s} is located in", "{s} lies in the country of"],
        ["The city of {s} is part of"],
        ["Question: In which country is {s}? Answer:"],
        ["Question: Which country does the city of {s} belong to? Answer:"],
    ),
)

CHAINS: tuple[Chain, ...] = (
    Chain(
        "created_in",
        "language",
        "The language of the country where {s} was created is",
        "Question: What language is spoken in the country where {s} was created? Answer:",
    ),
    Chain(
        "founded_by",
        "occupation",
        "The founder of {s} works as a",
        "Question: What is the occupation of the founder of {s}? Answer:",
    ),
    Chain(
        "based_in",
        "located_in",
        "The city where {s} is based lies in the country of",
        "Question: In which country is the city where {s} is based? Answer:",
    ),
)
