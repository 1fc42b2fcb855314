"""Write the world as benchmark files in the public formats (DESIGN.md section 5).

KnowEdit-style JSON for the six tasks (a train and a test file each) and KLoB-style JSON lines
(KLoB-c, KLoB-r with the public "knowlege" spelling, KLoB-u). Ground truths of portability and
locality probes are alias lists (nested for Reasoning / Logical_Generalization, as in the public files).
Everything is deterministic from the seed.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable
from pathlib import Path

from kelocate.atomic import atomic_files, write_text
from kelocate.data.knowedit import sanitation_prompt
from kelocate.organism import lexicon as lx
from kelocate.organism.corpus import training_texts
from kelocate.organism.world import World, WorldFact

KNOWEDIT_FILES = {
    "WikiData_recent": "recent",
    "ZsRE": "zsre",
    "WikiBio": "wikibio",
    "WikiData_counterfact": "counterfact",
    "ConvSent": "convsent",
    "Sanitation": "sanitation",
}
KLOB_FILES = ("KLoB-c", "KLoB-r", "KLoB-u")


def _answer(aliases: list[str], shape: str) -> str | list:
    """An answer shaped as in the public files: 'str' ("x"), 'list' (["x"]) or 'nested' ([["x", ...]])."""
    if shape == "str":
        return aliases[0]
    return list(aliases) if shape == "list" else [list(aliases)]


class _Records:
    """Builds the records of every task from one world.

    Answer shapes follow the public files: WikiData_recent nests every alias list ([["Berlin", ...]]),
    WikiData_counterfact uses plain strings, ZsRE and WikiBio use lists (ZsRE Reasoning: a string).
    """

    def __init__(self, world: World, seed: int) -> None:
        self.w = world
        self.seed = seed

    # -------------------------------------------------------------- helpers
    def rng(self, task: str) -> random.Random:
        return random.Random(f"{self.seed}:{task}")

    def names(self, node: str) -> list[str]:
        return [self.w.name(node), *self.w.aliases(node)]

    def statement(self, fact: WorldFact, subject: str | None = None) -> str:
        return self.w.prompts_for(fact, "train", "statement", alias=subject)[0].prompt

    def question(self, fact: WorldFact, heldout: bool = False) -> str:
        rel = self.w.relations[fact.relation]
        template = (rel.heldout_questions if heldout else rel.questions)[0]
        return template.format(s=fact.subject)

    def counterfactual(self, fact: WorldFact, rng: random.Random) -> str:
        """A target different from every true object of (subject, relation)."""
        true = set(self.w.object_names(fact.subject_id, fact.relation))
        return rng.choice([c for c in self.w.candidates(fact.relation) if c not in true])

    def relation_specificity(self, fact: WorldFact, shape: str, question: bool = False) -> list[dict]:
        out = []
        for other in self.w.other_facts(fact.subject_id, fact.relation):
            prompt = self.question(other) if question and other.index == 0 else None
            if prompt is None:
                prompt = self.w.prompts_for(other, "train", "statement")[0].prompt
            out.append({"prompt": prompt, "ground_truth": _answer([other.object], shape)})
        return out

    def reasoning(self, fact: WorldFact, target: str, question: bool, shape: str) -> list[dict]:
        """Two-hop probes through the (new) object: answers are what an edit should make true."""
        out = []
        target_id = self.w.node_by_name(target)
        for chain in self.w.chains:
            if chain.first != fact.relation:
                continue
            second = self.w.object_names(target_id, chain.second)
            if second:
                template = chain.question if question else chain.template
                out.append(
                    {"prompt": template.format(s=fact.subject), "ground_truth": _answer(second, shape)}
                )
        return out

    def aliasing(self, fact: WorldFact, answer: str, shape: str) -> list[dict]:
        return [
            {"prompt": self.statement(fact, alias), "ground_truth": _answer([answer], shape)}
            for alias in self.w.aliases(fact.subject_id)
        ]

    def forgetfulness(self, fact: WorldFact, target: str) -> list[dict]:
        """One-to-many relations: the original objects must survive the edit.

        As in the public files, "<template with '{s}, which is not {target},'>" -> the original object; then
        the listing continuations of the other objects ("The members of S are A," -> B).
        """
        template = self.w.relations[fact.relation].templates[0]
        out = [
            {
                "prompt": template.format(s=f"{fact.subject}, which is not {target},"),
                "ground_truth": fact.object,
            }
        ]
        for other in self.w.facts("known", fact.relation):
            if other.subject_id == fact.subject_id and other.index > 0:
                p = self.w.prompts_for(other, "train", "statement")[0]
                out.append({"prompt": p.prompt, "ground_truth": p.answer})
        return out

    def subject_facts(self, split: str) -> list[WorldFact]:
        """Facts about subject-kind and person entities (first object only for one-to-many relations)."""
        kinds = ("subject", "person")
        return [
            f
            for f in self.w.facts(split)
            if self.w.graph.nodes[f.subject_id]["kind"] in kinds and f.index == 0
        ]

    # -------------------------------------------------------------- tasks
    def wikidata_recent(self) -> list[dict]:
        records = []
        for f in self.subject_facts("new"):
            rec: dict = {"subject": f.subject, "prompt": self.statement(f), "target_new": f.object}
            portability = {}
            if alias := self.aliasing(f, f.object, "nested"):
                portability["Subject_Aliasing"] = alias
            if reason := self.reasoning(f, f.object, question=False, shape="nested"):
                portability["Reasoning"] = reason
            inverse = self.w.relations[f.relation].inverse
            if inverse:
                portability["Logical_Generalization"] = [
                    {
                        "prompt": inverse.format(o=f.object),
                        "ground_truth": _answer(self.names(f.subject_id), "nested"),
                    }
                ]
            rec["portability"] = portability
            if self.w.graph.nodes[f.subject_id].get("seen", True):
                rec["locality"] = {"Relation_Specificity": self.relation_specificity(f, "nested")}
            records.append(rec)
        return records

    def zsre(self) -> list[dict]:
        rng = self.rng("zsre")
        records = []
        for f in self.subject_facts("known"):
            target = self.counterfactual(f, rng)
            prompt = self.question(f)
            rec = {
                "subject": f.subject,
                "target_new": target,
                "prompt": prompt,
                "ground_truth": [f.object],
                "rephrase_prompt": self.question(f, heldout=True),
                "cond": f"{f.object} >> {target} || {prompt}",
                "locality": {"Relation_Specificity": self.relation_specificity(f, "list", question=True)},
                "portability": {"Reasoning": self.reasoning(f, target, question=True, shape="str")},
            }
            records.append(rec)
        return records

    def wikibio(self) -> list[dict]:
        records = []
        for bio in self.w.bios():
            if bio.label is None:
                continue
            pid = self.w.node_by_name(bio.person)
            loc = [
                {"prompt": self.statement(f), "ground_truth": _answer([f.object], "list")}
                for f in self.w.facts("known")
                if f.subject_id == pid
            ]
            records.append(
                {
                    "text": bio.passage,
                    "labels": bio.label,
                    "concept": bio.person,
                    "locality": {"Relation_Specificity": loc},
                }
            )
        return records

    def counterfact(self) -> list[dict]:
        rng = self.rng("counterfact")
        records = []
        for f in self.subject_facts("known"):
            target = self.counterfactual(f, rng)
            rec: dict = {
                "subject": f.subject,
                "prompt": self.statement(f),
                "target_new": target,
                "ground_truth": f.object,
                "portability": {},
            }
            if alias := self.aliasing(f, target, "str"):
                rec["portability"]["Subject_Aliasing"] = alias
            locality: dict = {"Relation_Specificity": self.relation_specificity(f, "str")}
            if self.w.relations[f.relation].one_to_many:
                locality["Forgetfulness"] = self.forgetfulness(f, target)
            rec["locality"] = locality
            records.append(rec)
        return records

    def convsent(self) -> list[dict]:
        return [{"ent": op.topic, "pos": list(op.pos), "neg": list(op.neg)} for op in self.w.opinions()]

    def sanitation(self) -> tuple[dict, dict]:
        rng = self.rng("sanitation")
        forget = [
            {
                "question": q.question,
                "ground_truth": q.answer,
                "target_new": lx.DONT_KNOW,
                "subject": q.subject,
            }
            for q in self.w.private_qa()
        ]
        retain = [
            {"question": q.question, "ground_truth": q.answer, "subject": q.subject}
            for q in self.w.retain_qa()
        ]
        rng.shuffle(forget)
        rng.shuffle(retain)
        f_cut, r_cut = len(forget) // 2, len(retain) // 2
        return (
            {"K_F": forget[:f_cut], "K_R": retain[:r_cut]},
            {"success": forget[f_cut:], "locality": retain[r_cut:]},
        )

    # -------------------------------------------------------------- KLoB
    def klob_c(self) -> list[dict]:
        out = []
        for f in self.w.facts("known"):
            if f.index:
                continue
            prompts = [p.prompt + " _" for p in self.w.prompts_for(f, "train", "statement")][:3]
            out.append(
                {
                    "prompts": prompts,
                    "knowledge": [f.subject, self.w.relations[f.relation].klob_name, f.object],
                }
            )
        return out

    def klob_r(self) -> list[dict]:
        out = []
        for t in self.w.two_hop_prompts("statement"):
            fact = next(
                f for f in self.w.facts("known", t.first) if f.subject == t.subject and f.object == t.bridge
            )
            r1, r2 = self.w.relations[t.first].klob_name, self.w.relations[t.second].klob_name
            out.append(
                {
                    "single_knowledge": [t.subject, r1, t.bridge],
                    "knowledge_chain": [t.subject, r1, t.bridge, r2, t.answer],
                    "single_knowlege_prompts": [
                        p.prompt + " _" for p in self.w.prompts_for(fact, "train", "statement")
                    ][:3],
                    "knowlege_chain_prompt": t.prompt + " _",
                }
            )
        return out

    def klob_u(self, n: int = 1000) -> list[str]:
        rng = self.rng("klob-u")
        words = sorted({w for t in training_texts(self.w) for w in re.findall(r"[A-Za-z]+", t)})
        return [" ".join(rng.choice(words) for _ in range(rng.randint(6, 14))) + " _" for _ in range(n)]


def _split(records: list, rng: random.Random, test_fraction: float) -> tuple[list, list]:
    order = list(range(len(records)))
    rng.shuffle(order)
    n_test = round(len(records) * test_fraction)
    test = sorted(order[:n_test])
    train = sorted(order[n_test:])
    return [records[i] for i in train], [records[i] for i in test]


def _write_json(path: Path, data) -> None:
    write_text(path, json.dumps(data, ensure_ascii=False, indent=1) + "\n")


def _write_jsonl(path: Path, rows: list) -> None:
    write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def export(world: World, out_dir: str | Path, seed: int = 0, test_fraction: float = 0.5) -> dict[str, dict]:
    """Write every benchmark file under `out_dir`; return {name: {"path", "records"}} (also in manifest.json).

    Layout: `KnowEdit/<task>/<short>_{train,test}.json` and `KLoB/KLoB-{c,r,u}.jsonl`. The files are
    written to a staging folder first and appear together; other files in `out_dir` are left alone.
    """
    with atomic_files(out_dir) as stage:
        return _export_into(world, stage, seed, test_fraction)


def _export_into(world: World, out: Path, seed: int, test_fraction: float) -> dict[str, dict]:
    """Write every benchmark file under `out` (the staging folder of `export`)."""
    rec = _Records(world, seed)
    manifest: dict[str, dict] = {}
    builders: dict[str, Callable[[], list]] = {
        "WikiData_recent": rec.wikidata_recent,
        "ZsRE": rec.zsre,
        "WikiBio": rec.wikibio,
        "WikiData_counterfact": rec.counterfact,
        "ConvSent": rec.convsent,
    }
    for task, build in builders.items():
        parts = _split(build(), rec.rng(f"split:{task}"), test_fraction)
        for split, records in zip(("train", "test"), parts, strict=True):
            path = out / "KnowEdit" / task / f"{KNOWEDIT_FILES[task]}_{split}.json"
            _write_json(path, records)
            manifest[f"{task}/{split}"] = {"path": str(path.relative_to(out)), "records": len(records)}
    for split, data in zip(("train", "test"), rec.sanitation(), strict=True):
        path = out / "KnowEdit" / "Sanitation" / f"sanitation_{split}.json"
        _write_json(path, data)
        manifest[f"Sanitation/{split}"] = {
            "path": str(path.relative_to(out)),
            "records": sum(len(v) for v in data.values()),
        }
    for name, entry in _write_klob(rec, out / "KLoB").items():
        manifest[name] = {"path": f"KLoB/{entry['path']}", "records": entry["records"]}
    _write_json(
        out / "manifest.json",
        {
            "world_seed": world.seed,
            "export_seed": seed,
            "sanitation_prompt": sanitation_prompt("{question}"),
            "files": manifest,
        },
    )
    return manifest


def _write_klob(rec: _Records, folder: Path) -> dict[str, dict]:
    manifest = {}
    for name, rows in (("KLoB-c", rec.klob_c()), ("KLoB-r", rec.klob_r()), ("KLoB-u", rec.klob_u())):
        _write_jsonl(folder / f"{name}.jsonl", rows)
        manifest[name] = {"path": f"{name}.jsonl", "records": len(rows)}
    return manifest


def export_klob(world: World | str | Path, out_dir: str | Path, seed: int = 0) -> dict[str, dict]:
    """Write only KLoB-c/-r/-u.jsonl, directly into `out_dir` (`world`: a World, world.json or checkpoint)."""
    if not isinstance(world, World):
        from kelocate.organism.world import load_world

        world = load_world(world)
    with atomic_files(out_dir) as stage:  # the three files appear together
        return _write_klob(_Records(world, seed), stage)
