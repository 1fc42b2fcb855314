"""`kelocate study report`: the Table 4 analog from a results file (methods x tasks x metrics), teacher-forced
and generation columns side by side, as Markdown and CSV; and, for sequential runs, the editing curves
(success and locality of the edits made so far after 1, 10, 100, 500 edits) as PNG and PDF; and failures.md,
what the edited model said, by kind (`failures.py`)."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from kelocate.atomic import write_text

COLUMNS = ("edit_tf", "edit_gen", "rephrase_tf", "rephrase_gen", "portability_tf", "portability_gen", "locality_tf",
           "fluency", "sentiment_gen", "kl_other_topics",
           # the easyedit profile's (`easyedit_metrics.py`), fractions here, x100 in published.md
           "ee.edit", "ee.portability", "ee.locality", "ee.fluency", "ee.sentiment", "ee.kl")


def aggregate(rows: Sequence[dict]) -> list[dict]:
    """One row per (method, task, mode): the mean of every column over the scored cases, the number of cases
    and of failed units. A `mixed` unit's cases are counted under their own tasks."""
    groups: dict[tuple[str, str, str], dict] = {}
    for row in rows:
        tasks = row.get("case_tasks") or [row["task"]] * len(row.get("scores") or [None])
        if row["status"] != "ok":  # a failed unit counts once, under each task it held
            for task in dict.fromkeys(tasks):
                groups.setdefault((row["method"], task, row["mode"]), {"scores": [], "failed": 0})["failed"] += 1
            continue
        for task, scores in zip(tasks, row["scores"], strict=True):  # mode `mixed`: each case under its task
            groups.setdefault((row["method"], task, row["mode"]), {"scores": [], "failed": 0})["scores"].append(scores)
    out = []
    for (method, task, mode), group in sorted(groups.items(), key=lambda item: _order(*item[0])):
        entry = {"method": method, "task": task, "mode": mode, "cases": len(group["scores"]),
                 "failed_units": group["failed"]}
        for column in columns(rows):
            values = [s[column] for s in group["scores"] if column in s and not math.isnan(s[column])]
            entry[column] = sum(values) / len(values) if values else None
        out.append(entry)
    return out


def _order(method: str, task: str, mode: str) -> tuple:
    """The study's own order (its method and task lists), whatever order a resumed run wrote rows in."""
    from kelocate.data.knowedit import TASKS
    from kelocate.edit.registry import METHODS

    order = list(METHODS)  # the registry's order is the study's
    base, _, trained_on = method.partition("@")
    rank = order.index(base) if base in order else len(order)
    return (rank, base, trained_on, TASKS.index(task) if task in TASKS else len(TASKS), task, mode)


def columns(rows: Sequence[dict]) -> list[str]:
    """COLUMNS, each followed by the sub-types the rows hold (`portability_tf.Reasoning`, ...)."""
    seen = {c for row in rows if row["status"] == "ok" for scores in row["scores"] for c in scores}
    out = []
    for column in COLUMNS:
        out += [column, *sorted(c for c in seen if c.startswith(column + "."))]
    return out + sorted(seen - set(out))  # a column no list names yet is shown last, never dropped


def _cell(value) -> str:
    return "-" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def metric_columns(table: Sequence[dict]) -> list[str]:
    """The metric columns of an aggregated table, in their order."""
    fixed = {"method", "task", "mode", "cases", "failed_units"}
    return [c for c in (table[0] if table else {}) if c not in fixed]


def markdown(table: Sequence[dict], sub_types: bool = True) -> str:
    """The table as Markdown; `sub_types=False` leaves out the per-sub-type columns (narrower, for a terminal)."""
    used = [c for c in metric_columns(table) if any(r[c] is not None for r in table) and (sub_types or c in COLUMNS)]
    head = ["method", "task", "mode", *used, "cases", "failed_units"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in table:
        lines.append("| " + " | ".join(_cell(row[h]) for h in head) + " |")
    return "\n".join(lines) + "\n"


def write_report(rows: Sequence[dict], out: str | Path,
                 beside: Mapping[str, Sequence[dict]] | None = None) -> dict[str, Path]:
    """Write table4.md, table4.csv, the sequential curves and (rows with replies) failures.md, the kinds of the
    edited model's replies (`failures.py`), into folder `out`; returns their paths. `beside` ({label: rows},
    this study's first) adds beside.md: the studies' Table 4 next to each other and the published one."""
    folder = Path(out)
    table = aggregate(rows)
    buffer = io.StringIO()
    fields = ["method", "task", "mode", *metric_columns(table), "cases", "failed_units"]
    writer = csv.DictWriter(buffer, fieldnames=fields)
    writer.writeheader()
    for row in table:
        writer.writerow({k: "" if row[k] is None else row[k] for k in fields})
    paths = {"markdown": folder / "table4.md", "csv": folder / "table4.csv"}
    write_text(paths["markdown"], markdown(table))
    write_text(paths["csv"], buffer.getvalue())
    from kelocate.studies.knowedit.published import published_report

    if any(r["mode"] == "single" for r in table):  # the published Table 4 is single edits
        paths["published"] = folder / "published.md"
        write_text(paths["published"], published_report(table))
    if beside:
        from kelocate.studies.knowedit.published import studies_report

        paths["beside"] = folder / "beside.md"
        write_text(paths["beside"], studies_report({label: aggregate(r) for label, r in beside.items()}))
    cross = cross_domain_table(table)
    if cross:
        paths["cross_domain"] = folder / "table6.md"
        write_text(paths["cross_domain"], cross)
    from kelocate.studies.knowedit.failures import failures_markdown

    failures = failures_markdown(rows)
    if failures:  # results written before replies were kept have none
        paths["failures"] = folder / "failures.md"
        write_text(paths["failures"], failures)
    general = general_table(rows)
    if general:
        paths["general"] = folder / "table5.md"
        write_text(paths["general"], general)
    from kelocate.plots.study import draw_curves

    for path in draw_curves(curves(rows), folder):
        paths[path.name] = path
    return paths


def general_table(rows: Sequence[dict]) -> str:
    """The Table 5 analog (Markdown; empty without sequential rows measuring it): general ability before the
    edits and after each curve point, averaged over the units of a (method, task): kelocate's recall and
    perplexity, and lm-eval's metrics (`harness.<task>.<metric>`) where the study ran them."""
    from kelocate.studies.knowedit.harness import harness_columns

    groups: dict[tuple[str, str], dict[int, dict[str, list[float]]]] = {}
    skipped: dict[str, str] = {}
    for row in rows:
        if row["status"] != "ok" or "general_before" not in row:
            continue
        if "harness_skipped" in row:
            skipped[row["method"]] = row["harness_skipped"]
        points = groups.setdefault((row["method"], row["task"]), {})
        for edits, values in [(0, row["general_before"]), *[(p["edits"], p) for p in row.get("curve", [])]]:
            for column, value in values.items():
                if (column.startswith("general_") or column.startswith("harness.")) and value is not None:
                    points.setdefault(edits, {}).setdefault(column, []).append(value)
    if not groups:
        return ""
    seen = {c for points in groups.values() for cols in points.values() for c in cols}
    names = {"general_recall": "recall of unrelated facts", "general_perplexity": "perplexity of held-out text"}
    shown = [c for c in names if c in seen] + harness_columns(seen)
    lines = ["| method | task | edits | " + " | ".join(names.get(c, c) for c in shown) + " |",
             "|---|---|---|" + "---|" * len(shown)]
    for (method, task), points in groups.items():
        for edits in sorted(points):
            cols = points[edits]
            cells = [f"{sum(v) / len(v):.3f}" if (v := cols.get(c)) else "-" for c in shown]
            lines.append(f"| {method} | {task} | {edits} | " + " | ".join(cells) + " |")
    notes = [f"- {method}: no harness columns ({why})" for method, why in skipped.items()]
    return "\n".join(lines + ([""] + notes if notes else [])) + "\n"


def curves(rows: Sequence[dict]) -> dict[str, dict[str, dict[int, dict[str, float]]]]:
    """task -> method -> edits -> mean of each curve column over the sequential units; a `mixed` unit gives
    the whole stream ("mixed") and each task's cases in it ("mixed-ZsRE", ...)."""
    sums: dict = {}

    def add(task: str, method: str, edits: int, values: dict) -> None:
        at = sums.setdefault(task, {}).setdefault(method, {}).setdefault(edits, {})
        for column, value in values.items():
            if column not in ("edits", "tasks") and value is not None:
                at.setdefault(column, []).append(value)

    for row in rows:
        for point in row.get("curve", []) if row["status"] == "ok" else []:
            add(row["task"], row["method"], point["edits"], point)
            for task, values in point.get("tasks", {}).items():  # mode `mixed`: each task's cases apart
                add(f"{row['task']}-{task}", row["method"], point["edits"], values)
    return {task: {method: {k: {c: sum(v) / len(v) for c, v in cols.items()} for k, cols in sorted(points.items())}
                   for method, points in methods.items()} for task, methods in sums.items()}


def cross_domain_table(table: Sequence[dict]) -> str:
    """The Table 6 analog (Markdown; empty without 'mend@TASK'-style methods): each trained editor, by the
    task it was trained on (rows), on every task it edited (columns): edit success / locality."""
    cells = {(r["method"], r["mode"], r["task"]): r for r in table if "@" in r["method"]}
    if not cells:
        return ""
    editors = list(dict.fromkeys((m, mode) for m, mode, _ in cells))
    several = len({mode for _, mode in editors}) > 1
    tasks = list(dict.fromkeys(t for *_, t in cells))
    lines = ["| editor (trained on) | " + " | ".join(tasks) + " |", "|---|" + "---|" * len(tasks)]
    for method, mode in editors:
        base, _, trained_on = method.partition("@")
        row = []
        for task in tasks:
            r = cells.get((method, mode, task))
            row.append("-" if r is None else f"{_cell(r['edit_tf'])} / {_cell(r['locality_tf'])}")
        label = f"{base} ({trained_on}{', ' + mode if several else ''})"
        lines.append(f"| {label} | " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n\n(cells: edit_tf / locality_tf, teacher-forced)\n"
