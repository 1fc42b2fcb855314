"""Generate a synthetic world from a seed (see `kelocate.organism.world` for what the graph holds).

Objects are drawn uniformly so that a model guessing an untrained fact is right about 1 time in the
size of the object vocabulary; entity names are made-up and unique; the case study (SMAP) is fixed.
"""

from __future__ import annotations

import random

import networkx as nx

from kelocate.organism import lexicon as lx
from kelocate.organism.world import NEW_RELATION_CHOICES, UNSEEN_RELATIONS, World, WorldSize


class _Builder:
    def __init__(self, seed: int, size: WorldSize) -> None:
        self.rng = random.Random(seed)
        self.size = size
        self.g = nx.MultiDiGraph()
        self.names = lx.NameMaker(self.rng, taken={"SMAP"})

    # -------------------------------------------------------------- helpers
    def node(self, node_id: str, kind: str, name: str, **attrs) -> str:
        self.g.add_node(node_id, kind=kind, name=name, **attrs)
        return node_id

    def fact(self, s: str, rel: str, o: str, split: str = "known", index: int = 0) -> None:
        key = f"{rel}#{index}" if index else rel
        self.g.add_edge(s, o, key=key, relation=rel, split=split, index=index)

    def assign_groups(self, nodes: list[str], first_full: tuple[str, ...] = ()) -> None:
        """Half 'full' (all templates trained), half 'eval' (held-out templates never trained)."""
        order = list(nodes)
        self.rng.shuffle(order)
        order.sort(key=lambda n: n not in first_full)
        for i, n in enumerate(order):
            self.g.nodes[n]["group"] = "full" if i % 2 == 0 else "eval"

    # -------------------------------------------------------------- parts of the world
    def vocabularies(self) -> dict[str, list[str]]:
        v: dict[str, list[str]] = {}
        for kind, words in (
            ("type", lx.TYPES),
            ("color", lx.COLORS),
            ("field", lx.FIELDS),
            ("occupation", lx.OCCUPATIONS),
            ("code", lx.SECRET_CODES),
        ):
            v[kind] = [self.node(f"{kind}:{w}", kind, w) for w in words]
        v["country"], v["language"], v["capital"] = [], [], []
        continents = {}
        for country, (language, capital, continent) in lx.COUNTRIES.items():
            c = self.node(f"country:{country}", "country", country)
            lang = self.node(f"language:{language}", "language", language)
            cap = self.node(f"capital:{capital}", "capital", capital)
            if continent not in continents:
                continents[continent] = self.node(f"continent:{continent}", "continent", continent)
            self.fact(c, "language", lang)
            self.fact(c, "capital", cap)
            self.fact(c, "continent", continents[continent])
            v["country"].append(c)
            v["language"].append(lang)
            v["capital"].append(cap)
        self.assign_groups(v["country"], first_full=("country:Japan",))
        return v

    def cities(self, countries: list[str]) -> list[str]:
        cities = []
        for i in range(self.size.cities):
            c = self.node(f"city:{i:03d}", "city", self.names.make(words=(2, 3), n_words=(1,)))
            self.fact(c, "located_in", self.rng.choice(countries))
            cities.append(c)
        self.assign_groups(cities)
        return cities

    def persons(self, v: dict[str, list[str]], cities: list[str]) -> list[str]:
        persons = []
        for i in range(self.size.persons):
            p = self.node(f"person:{i:03d}", "person", self.names.make(words=(2,), n_words=(2,)))
            self.fact(p, "occupation", self.rng.choice(v["occupation"]))
            self.fact(p, "born_in", self.rng.choice(cities))
            self.fact(p, "citizen_of", self.rng.choice(v["country"]))
            persons.append(p)
        self.assign_groups(persons)
        order = list(persons)
        self.rng.shuffle(order)
        # biographies: the first half keep born_in trained, the second half get it as an untrained label
        n_bio = self.size.bio_persons
        for j, p in enumerate(order[:n_bio]):
            self.g.nodes[p]["bio"] = True
            if j >= n_bio // 2:
                self._set_split(p, "born_in", "new")
        self.rng.shuffle(order)
        cut = self.size.private
        for p in order[:cut]:
            self.fact(p, "secret_code", self.rng.choice(v["code"]))
        for p in order[cut : cut + self.size.unknown_private]:
            self.g.nodes[p]["no_secret"] = True
        for p in order[cut + self.size.unknown_private : cut + self.size.unknown_private + self.size.retain]:
            self.g.nodes[p]["retain"] = True
        return persons

    def _set_split(self, s: str, rel: str, split: str) -> None:
        for _, _, data in self.g.out_edges(s, data=True):
            if data["relation"] == rel:
                data["split"] = split

    def subject_facts(
        self,
        s: str,
        v: dict[str, list[str]],
        cities: list[str],
        persons: list[str],
        split: str,
        with_members: bool,
    ) -> None:
        if s != "subject:SMAP":
            self.fact(s, "created_in", self.rng.choice(v["country"]), split)
            self.fact(s, "type_of", self.rng.choice(v["type"]), split)
        self.fact(s, "based_in", self.rng.choice(cities), split)
        founder = self.rng.choice(persons)
        self.fact(s, "founded_by", founder, split)
        self.fact(s, "color", self.rng.choice(v["color"]), split)
        self.fact(s, "field", self.rng.choice(v["field"]), split)
        if with_members:
            others = [p for p in persons if p != founder]
            for i, m in enumerate(self.rng.sample(others, self.rng.choice((2, 3)))):
                self.fact(s, "has_member", m, split, index=i)

    def subjects(self, v: dict[str, list[str]], cities: list[str], persons: list[str]) -> list[str]:
        smap = self.node("subject:SMAP", "subject", "SMAP", seen=True)
        self.fact(smap, "created_in", "country:Japan")
        self.fact(smap, "type_of", "type:group")
        subjects = [smap]
        for i in range(1, self.size.subjects):
            name = self.names.acronym() if self.rng.random() < 0.1 else self.names.make()
            subjects.append(self.node(f"subject:{i:03d}", "subject", name, seen=True))
        for s in subjects:
            self.subject_facts(s, v, cities, persons, "known", with_members=True)
            new_rel = "color" if s == smap else self.rng.choice(NEW_RELATION_CHOICES)
            self._set_split(s, new_rel, "new")
        self.assign_groups(subjects, first_full=(smap,))
        for s in subjects[1:]:
            if self.rng.random() < self.size.alias_fraction:
                alias = self.names.acronym() if self.rng.random() < 0.5 else self.names.make()
                self.g.nodes[s]["aliases"] = [alias]
        for i in range(self.size.unseen_subjects):
            s = self.node(f"unseen:{i:03d}", "subject", self.names.make(), seen=False)
            for rel in UNSEEN_RELATIONS:
                target = {
                    "created_in": v["country"],
                    "type_of": v["type"],
                    "based_in": cities,
                    "founded_by": persons,
                    "color": v["color"],
                    "field": v["field"],
                }[rel]
                self.fact(s, rel, self.rng.choice(target), "new")
        return subjects

    def topics(self) -> None:
        for i in range(self.size.topics):
            name = self.names.make(words=(2, 3), n_words=(1,))
            self.node(f"topic:{i:03d}", "topic", name, sentiment="pos" if i % 2 == 0 else "neg")

    def build(self) -> nx.MultiDiGraph:
        v = self.vocabularies()
        cities = self.cities(v["country"])
        persons = self.persons(v, cities)
        self.subjects(v, cities, persons)
        self.topics()
        return self.g


def build_world(seed: int = 0, size: WorldSize | None = None) -> World:
    """Generate the world for `seed` (deterministic); `size` defaults to the shipped organism's."""
    size = size or WorldSize()
    return World(_Builder(seed, size).build(), seed=seed, size=size)
