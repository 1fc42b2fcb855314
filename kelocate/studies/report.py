"""`kelocate study report`: the Table 4 analog from a results file (methods x tasks x metrics), teacher-forced
and generation columns side by side, as Markdown and CSV."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from pathlib import Path

from kelocate.atomic import write_text

COLUMNS = ("edit_tf", "edit_gen", "rephrase_tf", "rephrase_gen", "portability_tf", "portability_gen", "locality_tf",
           "fluency", "sentiment_gen", "kl_other_topics")


def aggregate(rows: Sequence[dict]) -> list[dict]:
    """One row per (method, task, mode): the mean of every column over the scored cases, the number of cases
    and of failed units."""
    groups: dict[tuple[str, str, str], dict] = {}
    for row in rows:
        key = (row["method"], row["task"], row["mode"])
        group = groups.setdefault(key, {"scores": [], "failed": 0})
        if row["status"] == "ok":
            group["scores"] += row["scores"]
        else:
            group["failed"] += 1
    out = []
    for (method, task, mode), group in groups.items():
        entry = {"method": method, "task": task, "mode": mode, "cases": len(group["scores"]),
                 "failed_units": group["failed"]}
        for column in COLUMNS:
            values = [s[column] for s in group["scores"] if column in s and not math.isnan(s[column])]
            entry[column] = sum(values) / len(values) if values else None
        out.append(entry)
    return out


def _cell(value) -> str:
    return "-" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def markdown(table: Sequence[dict]) -> str:
    used = [c for c in COLUMNS if any(r[c] is not None for r in table)]
    head = ["method", "task", "mode", *used, "cases", "failed_units"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in table:
        lines.append("| " + " | ".join(_cell(row[h]) for h in head) + " |")
    return "\n".join(lines) + "\n"


def write_report(rows: Sequence[dict], out: str | Path) -> dict[str, Path]:
    """Write table4.md and table4.csv into folder `out`; returns their paths."""
    folder = Path(out)
    table = aggregate(rows)
    buffer = io.StringIO()
    fields = ["method", "task", "mode", *COLUMNS, "cases", "failed_units"]
    writer = csv.DictWriter(buffer, fieldnames=fields)
    writer.writeheader()
    for row in table:
        writer.writerow({k: "" if row[k] is None else row[k] for k in fields})
    paths = {"markdown": folder / "table4.md", "csv": folder / "table4.csv"}
    write_text(paths["markdown"], markdown(table))
    write_text(paths["csv"], buffer.getvalue())
    return paths
