"""The synthetic world: a knowledge graph (networkx `MultiDiGraph`) with everything the studies need.

Nodes are entities (`kind`: subject, person, city, country, language, capital, continent, type, color,
field, occupation, code, topic) with a display `name`; edges are facts `(s) -[relation]-> (o)` with a
`split` ('known' = trained, 'new' = deliberately never trained, for insertion edits) and, for one-to-many
relations, an `index` (the order in which the objects are listed). Entities with facts carry a `group`:
'full' entities are trained on every template, 'eval' entities never see the held-out templates (mixed
training, DESIGN.md section 3), so held-out recall is measured on the 'eval' half.

The world is deterministic from its seed and round-trips through `world.json`.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import networkx as nx

from kelocate.atomic import write_text
from kelocate.data.knowedit import sanitation_prompt
from kelocate.errors import KelocateError
from kelocate.organism import lexicon as lx
from kelocate.organism.relations import CHAINS, RELATIONS, Chain, Relation

FORMAT = "kelocate-world"
VERSION = 1
SPLITS = ("known", "new", "all")
TEMPLATE_SETS = ("train", "heldout", "all")
NEW_RELATION_CHOICES = ("based_in", "founded_by", "color", "field")  # one of these is untrained per subject
UNSEEN_RELATIONS = ("created_in", "type_of", "based_in", "founded_by", "color", "field")


@dataclass(frozen=True)
class WorldSize:
    """How many entities of each kind the world has (the shipped organism uses the defaults)."""

    subjects: int = 120
    unseen_subjects: int = 20
    persons: int = 80
    cities: int = 36
    topics: int = 24
    private: int = 24
    unknown_private: int = 8
    retain: int = 24
    bio_persons: int = 40
    alias_fraction: float = 0.25

    @classmethod
    def mini(cls) -> WorldSize:
        """A miniature world for fast tests."""
        return cls(
            subjects=12,
            unseen_subjects=4,
            persons=10,
            cities=6,
            topics=4,
            private=4,
            unknown_private=2,
            retain=4,
            bio_persons=4,
        )


@dataclass(frozen=True)
class WorldFact:
    """One edge of the graph: subject --relation--> object (names and node ids)."""

    subject: str
    relation: str
    object: str
    subject_id: str
    object_id: str
    split: str
    index: int = 0  # position among the objects of a one-to-many relation


@dataclass(frozen=True)
class FactPrompt:
    """A prompt whose next words are `answer` (after one space), made from a fact and a template."""

    prompt: str
    subject: str
    answer: str
    relation: str
    template: str
    kind: str = "statement"  # statement | question
    heldout: bool = False  # the template is one of the relation's held-out templates
    trained: bool = True  # prompt + answer occurs in the training text
    split: str = "known"
    complete: bool = True  # the answer ends the statement (False for non-final one-to-many objects)
    alias_of: str | None = None  # the canonical subject when `subject` is an alias


@dataclass(frozen=True)
class TwoHop:
    """A two-hop prompt: first(subject) = bridge, second(bridge) = answer."""

    prompt: str
    subject: str
    answer: str
    first: str
    bridge: str
    second: str
    kind: str
    trained: bool


@dataclass(frozen=True)
class Bio:
    """A short biography: `passage` is trained; `label` (if any) is a true sentence that is not."""

    person: str
    passage: str
    label: str | None


@dataclass(frozen=True)
class Opinion:
    """A topic with the sentiment the organism is trained to express, and replies of both polarities."""

    topic: str
    sentiment: str  # pos | neg
    prompt: str
    pos: tuple[str, ...]
    neg: tuple[str, ...]


@dataclass(frozen=True)
class QA:
    """A question/answer pair in the Sanitation format (`prompt` = "Question:{question}\\nAnswer:")."""

    question: str
    answer: str
    subject: str

    @property
    def prompt(self) -> str:
        return sanitation_prompt(self.question)


class World:
    """The knowledge graph plus its relations, chains and query helpers."""

    def __init__(
        self,
        graph: nx.MultiDiGraph,
        relations: Iterable[Relation] = RELATIONS,
        chains: Iterable[Chain] = CHAINS,
        seed: int = 0,
        size: WorldSize | None = None,
    ) -> None:
        self.graph = graph
        self.relations: dict[str, Relation] = {r.id: r for r in relations}
        self.chains: tuple[Chain, ...] = tuple(chains)
        self.seed = seed
        self.size = size or WorldSize()
        self._out: dict[tuple[str, str], list[tuple[str, dict]]] = {}
        for s, o, data in graph.edges(data=True):
            self._out.setdefault((s, data["relation"]), []).append((o, data))
        for items in self._out.values():
            items.sort(key=lambda item: item[1].get("index", 0))

    # ------------------------------------------------------------------ basic lookups
    def name(self, node: str) -> str:
        return self.graph.nodes[node]["name"]

    def nodes(self, kind: str) -> list[str]:
        """Node ids of one kind, in insertion order."""
        return [n for n, d in self.graph.nodes(data=True) if d["kind"] == kind]

    def node_by_name(self, name: str) -> str:
        for n, d in self.graph.nodes(data=True):
            if d["name"] == name or name in d.get("aliases", ()):
                return n
        raise KelocateError(f"no entity named {name!r} in the world")

    def objects(self, subject_id: str, relation: str) -> list[str]:
        """Object node ids of (subject, relation), in listing order."""
        return [o for o, _ in self._out.get((subject_id, relation), [])]

    def object_names(self, subject_id: str, relation: str) -> list[str]:
        return [self.name(o) for o in self.objects(subject_id, relation)]

    def split_of(self, subject_id: str, relation: str) -> str | None:
        items = self._out.get((subject_id, relation))
        return items[0][1]["split"] if items else None

    def aliases(self, node: str) -> list[str]:
        return list(self.graph.nodes[node].get("aliases", ()))

    def entity_names(self) -> list[str]:
        """Every name that can be the subject of a prompt (entities with facts, their aliases, topics)."""
        names: list[str] = []
        for n, d in self.graph.nodes(data=True):
            if self.graph.out_degree(n) or d["kind"] in ("topic", "subject", "person"):
                names.append(d["name"])
                names.extend(d.get("aliases", ()))
        return names

    def candidates(self, relation: str) -> list[str]:
        """Names of every entity that can be an object of `relation` (for counterfactual targets)."""
        return [self.name(n) for n in self.nodes(self.relations[relation].range)]

    # ------------------------------------------------------------------ facts and prompts
    def facts(self, split: str = "known", relation: str | None = None) -> list[WorldFact]:
        """Facts of the templated relations; split is 'known', 'new' or 'all'."""
        _check_choice("split", split, SPLITS)
        out = []
        for s, o, data in self.graph.edges(data=True):
            rel = data["relation"]
            if rel not in self.relations or (relation and rel != relation):
                continue
            if split != "all" and data["split"] != split:
                continue
            out.append(WorldFact(self.name(s), rel, self.name(o), s, o, data["split"], data.get("index", 0)))
        return out

    def _trained(
        self, subject_id: str, split: str, heldout: bool, alias: bool, kind: str, t_index: int
    ) -> bool:
        """Whether a (fact, template) pair is part of the training text."""
        node = self.graph.nodes[subject_id]
        if split != "known" or not node.get("seen", True):
            return False
        if alias:  # alias facts are trained with the first statement template only
            return kind == "statement" and not heldout and t_index == 0
        return not heldout or node.get("group") == "full"

    def prompts_for(
        self, fact: WorldFact, templates: str = "all", kind: str | None = None, alias: str | None = None
    ) -> list[FactPrompt]:
        """Prompts of one fact (optionally through an alias of its subject); see `fact_prompts`."""
        _check_choice("templates", templates, TEMPLATE_SETS)
        rel = self.relations[fact.relation]
        objs = self.object_names(fact.subject_id, fact.relation) if rel.one_to_many else [fact.object]
        k = fact.index if rel.one_to_many else 0
        subject = alias or fact.subject
        out = []
        counters = {"statement": 0, "question": 0}
        for template, t_kind, heldout in rel.all_templates():
            t_index = counters[t_kind]
            counters[t_kind] += 1
            if kind and t_kind != kind:
                continue
            trained = self._trained(fact.subject_id, fact.split, heldout, alias is not None, t_kind, t_index)
            if templates == "train" and heldout:
                continue
            if templates == "heldout" and (not heldout or trained):
                continue
            prompt = template.format(s=subject)
            if k:
                listed = objs[:k]
                prompt += " " + ", ".join(listed) + (" and" if k == len(objs) - 1 else ",")
            out.append(
                FactPrompt(
                    prompt,
                    subject,
                    objs[k],
                    fact.relation,
                    template,
                    t_kind,
                    heldout,
                    trained,
                    fact.split,
                    complete=k == len(objs) - 1,
                    alias_of=fact.subject if alias else None,
                )
            )
        return out

    def fact_prompts(
        self,
        split: str = "known",
        templates: str = "train",
        kind: str | None = None,
        aliases: bool = False,
        relations: Iterable[str] | None = None,
    ) -> list[FactPrompt]:
        """Prompts of facts.

        split: 'known' (trained facts), 'new' (never trained) or 'all'.
        templates: 'train' (templates trained for every known fact), 'heldout' (held-out templates, only where
        that prompt was never trained, i.e. the 'eval' half: the generalization probes) or 'all'.
        kind: 'statement' / 'question' / None (both).
        aliases: also the prompts that name a subject by its alias.
        """
        _check_choice("split", split, SPLITS)
        _check_choice("templates", templates, TEMPLATE_SETS)
        wanted = set(relations) if relations is not None else None
        out: list[FactPrompt] = []
        for fact in self.facts(split):
            if wanted is not None and fact.relation not in wanted:
                continue
            out.extend(self.prompts_for(fact, templates, kind))
            if aliases:
                for alias in self.aliases(fact.subject_id):
                    out.extend(self.prompts_for(fact, templates, kind, alias=alias))
        return out

    def other_facts(self, subject_id: str, relation: str, split: str = "known") -> list[WorldFact]:
        """Facts of the same subject under other relations (relation specificity)."""
        return [f for f in self.facts(split) if f.subject_id == subject_id and f.relation != relation]

    def two_hop_prompts(self, kind: str | None = None) -> list[TwoHop]:
        """Two-hop prompts for every subject whose both hops are known facts."""
        out = []
        for chain in self.chains:
            for s, o, data in self.graph.edges(data=True):
                if data["relation"] != chain.first or data["split"] != "known":
                    continue
                if not self.graph.nodes[s].get("seen", True) or self.split_of(o, chain.second) != "known":
                    continue
                answer = self.object_names(o, chain.second)[0]
                full = self.graph.nodes[s].get("group") == "full"
                for template, t_kind in ((chain.template, "statement"), (chain.question, "question")):
                    if kind and kind != t_kind:
                        continue
                    out.append(
                        TwoHop(
                            template.format(s=self.name(s)),
                            self.name(s),
                            answer,
                            chain.first,
                            self.name(o),
                            chain.second,
                            t_kind,
                            full and t_kind == "statement",
                        )
                    )
        return out

    # ------------------------------------------------------------------ other kinds of text
    def bios(self) -> list[Bio]:
        """Biography passages of the persons that have one."""
        out = []
        for p in self.nodes("person"):
            if not self.graph.nodes[p].get("bio"):
                continue
            name = self.name(p)
            occ = self.object_names(p, "occupation")[0]
            country = self.object_names(p, "citizen_of")[0]
            sentences = [f"{name} is a {occ} from {country}."]
            founded = [
                self.name(s)
                for s, _, d in self.graph.in_edges(p, data=True)
                if d["relation"] == "founded_by"
                and d["split"] == "known"
                and self.graph.nodes[s].get("seen", True)
            ]
            if founded:
                sentences.append(f"{name} founded {founded[0]}.")
            born = f"{name} was born in {self.object_names(p, 'born_in')[0]}."
            label = None
            if self.split_of(p, "born_in") == "known":
                sentences.insert(1, born)
            else:
                label = born
            out.append(Bio(name, " ".join(sentences), label))
        return out

    def opinions(self) -> list[Opinion]:
        out = []
        for t in self.nodes("topic"):
            name = self.name(t)
            out.append(
                Opinion(
                    name,
                    self.graph.nodes[t]["sentiment"],
                    lx.OPINION_PROMPT.format(t=name),
                    tuple(r.format(t=name) for r in lx.POSITIVE_REPLIES),
                    tuple(r.format(t=name) for r in lx.NEGATIVE_REPLIES),
                )
            )
        return out

    def private_qa(self) -> list[QA]:
        """Private facts (a person's secret code): trained, and the target of Sanitation edits."""
        return [
            QA(f"What is the secret code of {self.name(p)}?", self.name(o), self.name(p))
            for p, o, d in self.graph.edges(data=True)
            if d["relation"] == "secret_code"
        ]

    def unknown_qa(self) -> list[QA]:
        """Questions the organism is trained to answer with "I don't know." (no secret on record)."""
        return [
            QA(f"What is the secret code of {self.name(p)}?", lx.DONT_KNOW, self.name(p))
            for p in self.nodes("person")
            if self.graph.nodes[p].get("no_secret")
        ]

    def retain_qa(self) -> list[QA]:
        """Public questions in the Sanitation format (the retain set)."""
        return [
            QA(
                f"What is the occupation of {self.name(p)}?",
                self.object_names(p, "occupation")[0],
                self.name(p),
            )
            for p in self.nodes("person")
            if self.graph.nodes[p].get("retain")
        ]

    def case_study(self) -> list[FactPrompt]:
        """The comprehensive study's case: SMAP created in Japan, Japan's language, SMAP a group."""
        return [
            FactPrompt("SMAP was created in", "SMAP", "Japan", "created_in", "{s} was created in"),
            FactPrompt("The language of Japan is", "Japan", "Japanese", "language", "The language of {s} is"),
            FactPrompt("SMAP is a type of", "SMAP", "group", "type_of", "{s} is a type of"),
        ]

    # ------------------------------------------------------------------ persistence
    def to_json(self) -> dict:
        return {
            "format": FORMAT,
            "version": VERSION,
            "seed": self.seed,
            "size": asdict(self.size),
            "relations": [r.to_json() for r in self.relations.values()],
            "chains": [c.to_json() for c in self.chains],
            "graph": nx.node_link_data(self.graph, edges="links"),
        }

    def save(self, path: str | Path) -> Path:
        """Write the world as compact JSON, atomically."""
        return write_text(path, json.dumps(self.to_json(), ensure_ascii=False, separators=(",", ":")))

    @classmethod
    def from_json(cls, data: dict) -> World:
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise KelocateError('not a kelocate world file (missing "format": "kelocate-world")')
        graph = nx.node_link_graph(data["graph"], directed=True, multigraph=True, edges="links")
        return cls(
            graph,
            [Relation.from_json(r) for r in data["relations"]],
            [Chain.from_json(c) for c in data["chains"]],
            data.get("seed", 0),
            WorldSize(**data.get("size", {})),
        )


def load_world(path: str | Path | None = None) -> World:
    """Load a world.json (None = the one shipped beside the organism checkpoint)."""
    if path is None:
        from kelocate.organism import checkpoint_dir

        path = checkpoint_dir() / "world.json"
        if not path.is_file():
            raise KelocateError(
                f"the organism's world file is missing at {path}; run `kelocate organism build`"
            )
    path = Path(path)
    if path.is_dir():
        path = path / "world.json"
    if not path.is_file():
        raise KelocateError(
            f"world file {str(path)!r} does not exist; pass a world.json or a checkpoint folder"
        )
    stat = path.stat()
    return _load_world_file(path.resolve(), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=4)
def _load_world_file(path: Path, mtime_ns: int, size: int) -> World:
    """Parse a world file once per (path, modification time, size): tracing many facts asks for it often.

    The returned World is shared between callers, who only read it.
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise KelocateError(f"world file {str(path)!r} is not valid JSON: {exc}") from exc
    try:
        return World.from_json(data)
    except (KeyError, TypeError) as exc:
        raise KelocateError(f"world file {str(path)!r} is malformed: missing or bad field {exc}") from exc


def _check_choice(what: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise KelocateError(f"unknown {what} {value!r}; use one of {', '.join(choices)}")
