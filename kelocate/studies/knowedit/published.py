"""The comprehensive study's published numbers, shipped (`published.json`), and kelocate's table set beside them.

`published.json` holds Table 4 as now published (November 2024) and as first published, EasyEdit's own
KnowEdit table of 2024, the general-ability table (Table 5) and the cross-domain table, each with its
source (repository, commit, file) and how it was read. `beside_published` prints, per task and metric,
kelocate's value of each method next to the published one, and the agreement of the two method orderings
(Spearman's rho over the methods both have: the models differ, 135M or 2.6M parameters against 7B, so the
ordering is what can agree). `findings` checks the paper's findings, each a rule stated on the table, on
the published numbers and on kelocate's: holds / does not hold / not measurable here, with the numbers.

kelocate's values come from one metric profile: `easyedit` (the `ee.*` columns, defined as the reference
computes them, printed x100 as the published table prints them) or `kelocate` (its own columns, fractions;
not the published definitions, so their cells are a ranking to compare, not numbers to equal).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from kelocate.studies.numbers import fmt

METRICS = ("edit_succ", "portability", "locality", "fluency")
FACT_TASKS = ("WikiData_recent", "ZsRE", "WikiBio", "WikiData_counterfact")
# kelocate's column for each published metric, per profile and task ('*' for every other task)
_COLUMNS = {
    "easyedit": {
        "edit_succ": {"ConvSent": "ee.sentiment", "*": "ee.edit"},
        "portability": {"*": "ee.portability"},
        "locality": {"ConvSent": "ee.kl", "*": "ee.locality"},
        "fluency": {"*": "ee.fluency"},
    },
    "kelocate": {
        "edit_succ": {"ConvSent": "sentiment_gen", "Sanitation": "edit_gen", "*": "edit_tf"},
        "portability": {"*": "portability_tf"},
        "locality": {"ConvSent": "kl_other_topics", "*": "locality_tf"},
        "fluency": {"*": "fluency"},
    },
}
_SCALE = {"easyedit": 100.0, "kelocate": 1.0}


@dataclass(frozen=True)
class PublishedTable:
    """One published table: task -> method -> metric -> value (Table 4 shape), or its own shape (5, 6)."""

    name: str
    title: str
    model: str
    source: Mapping[str, str]
    notes: tuple[str, ...]
    cells: Mapping

    def value(self, task: str, method: str, metric: str) -> float | None:
        return self.cells.get(task, {}).get(method, {}).get(metric)


@cache
def published_tables() -> dict[str, PublishedTable]:
    """Every shipped table by name (paper_table4, paper_table4_2024_02, easyedit_2024_01, paper_table5,
    paper_table6)."""
    data = json.loads((Path(__file__).parent / "published.json").read_text())
    return {name: PublishedTable(name, t["title"], t["model"], t["source"], tuple(t.get("notes", ())), t["cells"])
            for name, t in data["tables"].items()}


def column_for(profile: str, metric: str, task: str) -> str:
    """kelocate's column standing for a published metric of a task, in a profile."""
    by_task = _COLUMNS[profile][metric]
    return by_task.get(task, by_task["*"])


def kelocate_value(table: Sequence[Mapping], profile: str, task: str, method: str, metric: str) -> float | None:
    """kelocate's value of a published cell from its aggregated table (`report.aggregate`), on the
    published scale where the profile is the reference's, or None where the table has none."""
    column = column_for(profile, metric, task)
    rows = [r for r in table if r["task"] == task and r["mode"] == "single" and r["method"] == method]
    if not rows:  # a trained editor named by its training task ('mend@ZsRE'): the one there is, if only one
        trained = [r for r in table if r["task"] == task and r["mode"] == "single"
                   and r["method"].partition("@")[0] == method]
        rows = trained if len({r["method"] for r in trained}) == 1 else []
    value = rows[0].get(column) if rows else None
    return None if value is None else value * _SCALE[profile]


def profiles_in(table: Sequence[Mapping]) -> list[str]:
    """The metric profiles a table holds columns of (easyedit first: the one the published numbers share)."""
    keys = {k for row in table for k, v in row.items() if v is not None}
    return [p for p in ("easyedit", "kelocate") if any(c in keys for m in _COLUMNS[p].values() for c in m.values())]


def spearman(ours: Mapping[str, float], theirs: Mapping[str, float]) -> tuple[float | None, int]:
    """Spearman's rho of two method -> value maps over the methods both have (None below 3 methods, or when
    one side does not vary)."""
    from scipy.stats import spearmanr

    common = [m for m in ours if m in theirs and ours[m] is not None and theirs[m] is not None]
    if len(common) < 3:
        return None, len(common)
    a, b = [ours[m] for m in common], [theirs[m] for m in common]
    if len(set(a)) < 2 or len(set(b)) < 2:
        return None, len(common)
    rho = float(spearmanr(a, b).statistic)
    return (None if math.isnan(rho) else rho), len(common)


def beside_published(table: Sequence[Mapping], profile: str, published: PublishedTable) -> str:
    """Markdown: per task and metric, each method's kelocate value next to the published one, and Spearman's
    rho of the two orderings."""
    methods = list(dict.fromkeys(r["method"].partition("@")[0] for r in table))  # 'mend@TASK' as 'mend'
    trained = sorted({r["method"] for r in table if "@" in r["method"]})
    scale = "x100, as published" if profile == "easyedit" else "fractions; fluency in bits"
    lines = [f"### kelocate ({profile} profile, {scale}) beside {published.title}", "",
             f"Published model: {published.model}. Source: {_where(published.source)}."
             + (f" Trained editors: {', '.join(trained)} (each in its method's column)." if trained else ""), ""]
    head = "| task | metric | " + " | ".join(methods) + " | Spearman rho (methods) |"
    lines += [head, "|---|---|" + "---|" * (len(methods) + 1)]
    for task, metric, values in _cell_values({"kelocate": table}, profile, published, methods):
        ours, theirs = values["kelocate"], values["published"]
        if all(v is None for v in ours.values()) or all(v is None for v in theirs.values()):
            continue
        cells = [f"{fmt(ours[m], '.2f')} / {fmt(theirs[m], '.2f')}" for m in methods]
        lines.append(f"| {task} | {column_for(profile, metric, task)} | " + " | ".join(cells)
                     + f" | {_rho(ours, theirs)} |")
    lines += ["", "(cells: kelocate / published; '-' where one side has no value)", ""]
    return "\n".join(lines)


def _cell_values(tables: Mapping[str, Sequence[Mapping]], profile: str, published: PublishedTable,
                 methods: Sequence[str]) -> Iterator[tuple[str, str, dict[str, dict[str, float | None]]]]:
    """Per task and metric of the published table: {label: {method: value}} of each study, and 'published'."""
    for task in published.cells:
        for metric in METRICS:
            values = {label: {m: kelocate_value(t, profile, task, m, metric) for m in methods}
                      for label, t in tables.items()}
            values["published"] = {m: published.value(task, m, metric) for m in methods}
            yield task, metric, values


def _rho(a: Mapping[str, float | None], b: Mapping[str, float | None]) -> str:
    """Spearman's rho of two method -> value maps over the methods both have, and how many: '0.90 (8)'."""
    rho, n = spearman({m: v for m, v in a.items() if v is not None}, {m: v for m, v in b.items() if v is not None})
    return f"{fmt(rho, '.2f')} ({n})"


def _where(source: Mapping[str, str]) -> str:
    path = source.get("path") or ", ".join(source.get("paths", []))
    return f"{source.get('repo', '?')} {path} @ {str(source.get('commit', '?'))[:10]}"


# ---------------------------------------------------------------------- findings
Lookup = Callable[[str, str, str], float | None]  # (task, method, metric) -> value


@dataclass(frozen=True)
class Finding:
    """One of the paper's findings as a rule on a Table 4 (`check` -> (holds or None, the numbers))."""

    text: str
    rule: str
    check: Callable[[Lookup], tuple[bool | None, str]]


def _all_of(pairs: list[tuple[bool | None, str]]) -> tuple[bool | None, str]:
    known = [ok for ok, _ in pairs if ok is not None]
    numbers = "; ".join(text for _, text in pairs)
    return (None if not known else all(known)), numbers


def _compare(get: Lookup, task: str, metric: str, high: str, low: str) -> tuple[bool | None, str]:
    a, b = get(task, high, metric), get(task, low, metric)
    if a is None or b is None:
        return None, f"{task}: n/a"
    return a > b, f"{task} {high} {a:.2f} vs {low} {b:.2f}"


def _lowest(get: Lookup, task: str, metric: str, method: str, methods: Sequence[str]) -> tuple[bool | None, str]:
    values = {m: get(task, m, metric) for m in methods}
    values = {m: v for m, v in values.items() if v is not None}
    if method not in values or len(values) < 3:
        return None, f"{task}: n/a"
    worst = min(values, key=values.get)
    return worst == method, f"{task} lowest {worst} {values[worst]:.2f} ({method} {values[method]:.2f})"


ALL = ("serac", "ice", "adalora", "mend", "rome", "memit", "ft-l", "ft-m")


def _portability_below_edit(get: Lookup) -> tuple[bool | None, str]:
    pairs = []
    for task in ("WikiData_recent", "ZsRE", "WikiData_counterfact"):
        for method in ALL:
            edit, port = get(task, method, "edit_succ"), get(task, method, "portability")
            if edit is not None and port is not None:
                pairs.append((port < edit, f"{task} {method} {port:.1f}<{edit:.1f}" if port < edit
                              else f"{task} {method} {port:.1f}>={edit:.1f}"))
    ok, _ = _all_of(pairs)
    failing = [t for o, t in pairs if o is False]
    return ok, (f"{len(pairs) - len(failing)} of {len(pairs)} cells" + (f"; not: {', '.join(failing)}" if failing
                                                                         else ""))


def _convsent_ceiling(get: Lookup) -> tuple[bool | None, str]:
    values = {m: get("ConvSent", m, "edit_succ") for m in ALL}
    values = {m: v for m, v in values.items() if v is not None}
    if not values:
        return None, "ConvSent: n/a"
    best = max(values, key=values.get)
    return values[best] <= 65.0, f"best {best} {values[best]:.2f}"


FINDINGS = (
    Finding("Locate-then-edit beats fine-tuning one layer: ROME's edit success exceeds FT-L's on every fact task.",
            "edit_succ(rome) > edit_succ(ft-l) on WikiData_recent, ZsRE, WikiBio, WikiData_counterfact",
            lambda get: _all_of([_compare(get, t, "edit_succ", "rome", "ft-l") for t in FACT_TASKS])),
    Finding("In-context editing disturbs unrelated inputs most: ICE has the lowest locality on every fact task.",
            "locality(ice) is the minimum over the methods on each fact task",
            lambda get: _all_of([_lowest(get, t, "locality", "ice", ALL) for t in FACT_TASKS])),
    Finding("MEND preserves unrelated knowledge better than ROME and MEMIT.",
            "locality(mend) > locality(rome) and > locality(memit) on WikiData_recent, ZsRE, WikiData_counterfact",
            lambda get: _all_of([_compare(get, t, "locality", "mend", m) for t in FACT_TASKS if t != "WikiBio"
                                 for m in ("rome", "memit")])),
    Finding("Edits carry over to related questions only partly: portability is below edit success.",
            "portability < edit_succ for every method on the three tasks with portability",
            _portability_below_edit),
    Finding("Changing a conversational sentiment is hard for every method.",
            "the best ConvSent edit success is at most 65 (published scale; kelocate's fractions x100)",
            _convsent_ceiling),
    Finding("Locate-then-edit can make the model forget (Sanitation): ROME succeeds where SERAC and MEND do not.",
            "edit_succ(rome) > edit_succ(serac) and > edit_succ(mend) on Sanitation",
            lambda get: _all_of([_compare(get, "Sanitation", "edit_succ", "rome", m) for m in ("serac", "mend")])),
)


def findings(table: Sequence[Mapping] | None, profile: str, published: PublishedTable) -> list[dict]:
    """Each finding on the published table and on kelocate's (None: no kelocate table): verdicts and numbers.
    kelocate's values are put on the published scale (x100) whatever the profile, so the ConvSent ceiling
    reads the same; the other rules compare methods and do not depend on the scale."""
    def theirs(task, method, metric):
        return published.value(task, method, metric)

    def ours(task, method, metric):
        value = kelocate_value(table, profile, task, method, metric) if table is not None else None
        return None if value is None else value * (100.0 / _SCALE[profile])

    out = []
    for finding in FINDINGS:
        paper_ok, paper_numbers = finding.check(theirs)
        ok, numbers = finding.check(ours) if table is not None else (None, "")
        out.append({"finding": finding.text, "rule": finding.rule, "published": paper_ok,
                    "published_numbers": paper_numbers, "kelocate": ok, "kelocate_numbers": numbers})
    return out


def _verdict(ok: bool | None) -> str:
    return "not measurable here" if ok is None else "holds" if ok else "does not hold"


def findings_markdown(items: Sequence[Mapping], profile: str) -> str:
    lines = [f"### The paper's findings, on kelocate's table ({profile} profile)", "",
             "| finding | rule | published | kelocate |", "|---|---|---|---|"]
    for item in items:
        lines.append(f"| {item['finding']} | {item['rule']} | {_verdict(item['published'])}: "
                     f"{item['published_numbers']} | {_verdict(item['kelocate'])}: {item['kelocate_numbers']} |")
    return "\n".join(lines) + "\n"


def published_report(table: Sequence[Mapping], name: str = "paper_table4") -> str:
    """The whole comparison (Markdown): per profile the table holds, the cells beside the published table
    and the findings; then the other shipped tables' sources."""
    published = published_tables()[name]
    parts = ["## kelocate beside the published numbers", ""]
    for note in published.notes:
        parts.append(f"- {note}")
    parts.append("")
    for profile in profiles_in(table):
        parts += [beside_published(table, profile, published), findings_markdown(
            findings(table, profile, published), profile), ""]
    parts += ["Other shipped tables (`kelocate.studies.knowedit.published.published_tables()`):", ""]
    parts += [f"- `{t.name}`: {t.title}; {_where(t.source)}" for t in published_tables().values() if t.name != name]
    return "\n".join(parts) + "\n"


# ---------------------------------------------------------------------- several studies beside the paper
def beside_studies(tables: Mapping[str, Sequence[Mapping]], profile: str, published: PublishedTable) -> str:
    """Markdown: per task and metric, each method's value in every study (e.g. SmolLM2, the organism) and the
    published one, then Spearman's rho of each study's ordering against the published ordering and of the
    first two studies against each other (do two models order the methods alike?)."""
    labels = list(tables)
    methods = list(dict.fromkeys(r["method"].partition("@")[0] for t in tables.values() for r in t))
    scale = "x100, as published" if profile == "easyedit" else "fractions; fluency in bits"
    pairs = [(label, "published") for label in labels] + ([(labels[0], labels[1])] if len(labels) > 1 else [])
    lines = [f"### {' / '.join(labels)} ({profile} profile, {scale}) beside {published.title}", "",
             f"Published model: {published.model}. Source: {_where(published.source)}.", "",
             "| task | metric | " + " | ".join(methods) + " | " + " | ".join(f"rho {a} vs {b}" for a, b in pairs)
             + " |", "|---|---|" + "---|" * (len(methods) + len(pairs))]
    for task, metric, values in _cell_values(tables, profile, published, methods):
        if all(v is None for label in labels for v in values[label].values()):
            continue
        cells = [" / ".join(fmt(values[label][m], ".2f") for label in [*labels, "published"]) for m in methods]
        lines.append(f"| {task} | {column_for(profile, metric, task)} | " + " | ".join(cells) + " | "
                     + " | ".join(_rho(values[a], values[b]) for a, b in pairs) + " |")
    lines += ["", f"(cells: {' / '.join([*labels, 'published'])}; '-' where one has no value; rho over the "
                  "methods both have, in brackets)", ""]
    verdicts = {label: findings(t, profile, published) for label, t in tables.items()}
    lines += [f"### The paper's findings on each table ({profile} profile)", "",
              "| finding | published | " + " | ".join(labels) + " |", "|---|---|" + "---|" * len(labels)]
    for i, finding in enumerate(FINDINGS):
        first = verdicts[labels[0]][i]
        row = [finding.text, f"{_verdict(first['published'])}: {first['published_numbers']}"]
        row += [f"{_verdict(verdicts[label][i]['kelocate'])}: {verdicts[label][i]['kelocate_numbers']}"
                for label in labels]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def studies_report(tables: Mapping[str, Sequence[Mapping]], name: str = "paper_table4") -> str:
    """Several studies' Table 4 beside each other and the published table, for every profile they all hold."""
    published = published_tables()[name]
    shared = [p for p in ("easyedit", "kelocate") if all(p in profiles_in(t) for t in tables.values())]
    parts = ["## " + " beside ".join(tables) + " beside the published numbers", ""]
    if not shared:
        parts.append("The studies hold no metric profile in common; nothing to set side by side.")
    for profile in shared:
        parts.append(beside_studies(tables, profile, published))
    return "\n".join(parts) + "\n"
