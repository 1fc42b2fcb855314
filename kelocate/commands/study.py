"""`kelocate study`: the KnowEdit study. `validate FILE` says which task a file holds and what it lacks."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import typer
from rich.table import Table

from kelocate.commands.common import console, user_errors


def register(app: typer.Typer) -> None:
    study_app = typer.Typer(help="The KnowEdit study: validate task files.", no_args_is_help=True)
    app.add_typer(study_app, name="study")

    @study_app.command("validate")
    @user_errors
    def validate(
        file: Path = typer.Argument(..., help="A KnowEdit task file (any of the six) or a ROME CounterFact file."),
        task: str = typer.Option(None, "--task", help="The task, when the fields do not tell (default: detected)."),
        as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
    ) -> None:
        """Read FILE as the study will: the task recognised, counts, missing fields and skipped records."""
        from kelocate.studies.knowedit import KnowEditSkipWarning, load_knowedit, summary

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", KnowEditSkipWarning)  # reported below, record by record
            facts = summary(load_knowedit(file, task))
        if as_json:
            console.print_json(json.dumps(facts))
            return
        console.print(f"{file}: {facts['task']} ({'given' if task else 'detected from its fields'}); "
                      f"{facts['cases']} cases from {facts['records']} records, {len(facts['skipped'])} skipped",
                      highlight=False)
        table = Table("field", "cases without it")
        for name, count in facts["missing"].items():
            table.add_row(name, str(count))
        console.print(table)
        for kind in ("portability", "locality"):
            if facts[kind]:
                console.print(f"{kind} probes: " + ", ".join(f"{k} {v}" for k, v in facts[kind].items()),
                              highlight=False)
        for s in facts["skipped"]:
            console.print(f"skipped: {s['file']} record {s['index']}: {s['reason']}", highlight=False)
