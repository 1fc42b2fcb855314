"""`kelocate study`: the KnowEdit study. `validate FILE` says which task a file holds and what it lacks;
`run CONFIG` runs (or resumes) a study; `report RESULTS` writes its tables."""

from __future__ import annotations

import contextlib
import json
import warnings
from pathlib import Path

import typer
from rich.table import Table

from kelocate.commands.common import console, err_console, user_errors


def register(app: typer.Typer) -> None:
    study_app = typer.Typer(help="The studies: KnowEdit (validate, run, report), the analyses of edits (case, "
                                 "recovery, locate-vs-edit, weights) and every figure at once (figures).",
                            no_args_is_help=True)
    app.add_typer(study_app, name="study")
    from kelocate.commands.case import register_case

    register_case(study_app)  # `kelocate study case`: the SMAP case (Figure 9)
    from kelocate.commands.study_recovery import register as register_recovery

    register_recovery(study_app)  # `kelocate study recovery` (kelocate.studies.recovery)
    from kelocate.commands.study_locate_vs_edit import register as register_locate_vs_edit

    register_locate_vs_edit(study_app)  # `kelocate study locate-vs-edit` (kelocate.studies.locate_vs_edit)
    from kelocate.commands.study_weights import register as register_weights

    register_weights(study_app)  # `kelocate study weights` (kelocate.studies.weights)
    from kelocate.commands.study_figures import register as register_figures

    register_figures(study_app)  # `kelocate study figures` (kelocate.studies.figures)

    @study_app.command("validate")
    @user_errors
    def validate(
        file: Path = typer.Argument(..., help="A KnowEdit task file (any of the six) or a ROME CounterFact file."),
        task: str = typer.Option(None, "--task", help="The task, when the fields do not tell (default: detected)."),
        as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
    ) -> None:
        """Read FILE as the study will: the task recognised, counts, missing fields and skipped records."""
        from kelocate.data.knowedit import KnowEditSkipWarning, load_knowedit, summary

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

    @study_app.command("run")
    @user_errors
    def run(
        config_file: Path = typer.Argument(..., help="A study config (TOML), e.g. studies/organism_knowedit.toml."),
        out: Path = typer.Option(None, "--out", help="Results folder (default: kelocate_out/study/<config name>)."),
        executor: str = typer.Option("serial", "--executor", help="serial, or ray (pip install kelocate[ray])."),
        workers: int = typer.Option(2, "--workers", min=1, help="Ray: worker processes (one model each)."),
        retry_failed: bool = typer.Option(False, "--retry-failed",
                                          help="Rerun the units recorded as failed (others are skipped)."),
    ) -> None:
        """Run a study; rerun the same command to resume (finished units are skipped)."""
        from kelocate.commands.progress import progress
        from kelocate.errors import KelocateError
        from kelocate.studies.knowedit.config import load_config
        from kelocate.studies.knowedit.runner import run_study

        if executor not in ("serial", "ray"):
            raise KelocateError(f"unknown --executor {executor!r}; use serial or ray")
        config = load_config(config_file)
        folder = out or Path("kelocate_out") / "study" / config_file.stem
        with contextlib.ExitStack() as stack:
            bars: list = []

            def advance(done: int, total: int, detail: str) -> None:
                if not bars:  # the number of units is known once the task files are read
                    bars.append(stack.enter_context(progress("study", total)))
                bars[0](done, detail)

            summary = run_study(config, folder, progress=advance,
                                log=lambda text: err_console.print(text, highlight=False), executor=executor,
                                workers=workers, retry_failed=retry_failed)
        console.print(f"{summary['ran']} units run, {summary['skipped']} already done, {summary['failed']} failed; "
                      f"results in {summary['out']} (report: kelocate study report {summary['out']})",
                      highlight=False)

    @study_app.command("report")
    @user_errors
    def report(
        results: Path = typer.Argument(..., help="The --out folder of `kelocate study run` (or its results.jsonl)."),
        out: Path = typer.Option(None, "--out", help="Folder for the tables (default: RESULTS/report)."),
        beside: list[Path] = typer.Option(None, "--beside", help="Another study's --out folder to set beside "
                                          "this one and the published table (beside.md); repeatable."),
    ) -> None:
        """The Table 4 analog: methods x tasks x metrics, teacher-forced and generation columns side by side,
        and (published.md) kelocate's cells beside the published Table 4, the ordering agreement and the
        paper's findings; with --beside, other studies' cells too (beside.md)."""
        from kelocate.studies.knowedit.report import aggregate, markdown, write_report
        from kelocate.studies.knowedit.store import read_results, study_label

        rows = read_results(results)
        others = {}
        if beside:
            others = {study_label(results): rows}
            for path in beside:
                label = study_label(path)
                if label in others:
                    label = f"{label} ({path.name})"
                while label in others:  # the same model in folders of the same name
                    label += "'"
                others[label] = read_results(path)
        folder = out or (results if results.is_dir() else results.parent) / "report"
        paths = write_report(rows, folder, others)
        console.print(markdown(aggregate(rows), sub_types=False), highlight=False, markup=False)
        extra = "".join(f", {paths[k]}" for k in ("published", "beside", "failures") if k in paths)
        console.print(f"written: {paths['markdown']}, {paths['csv']}{extra}", highlight=False)
