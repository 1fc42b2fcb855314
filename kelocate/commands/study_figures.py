"""`kelocate study figures`: every figure of kelocate on one model into one folder, resumably, and
OUT/report.html, a self-contained page that opens in any browser (`kelocate.studies.figures.make_figures`)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from kelocate.commands.common import console, err_console, load, parse_names, parse_trained, user_errors


def register(study_app: typer.Typer) -> None:
    """Add `figures` to the `kelocate study` group."""

    @study_app.command("figures")
    @user_errors
    def figures(
        model: str = typer.Option(None, "--model", "-m", help="The organism (default) or a local/fetched model."),
        out: Path = typer.Option(Path("kelocate_out/figures"), "--out", help="Folder for the data, the figures "
                                 "and report.html; rerun with the same folder to resume or redraw."),
        only: str = typer.Option("", "--only", help="Sections to make (comma-separated; default: all): trace, "
                                 "klob, case, weights, recovery, locate_vs_edit, knowedit, sequential."),
        facts_file: Path = typer.Option(None, "--facts-file", help="A KnowEdit or CounterFact file of facts the "
                                        "model knows (a model other than the organism)."),
        klob_data: Path = typer.Option(None, "--klob-data", help="A folder with KLoB-c.jsonl and KLoB-r.jsonl "
                                       "(default on the organism: its own export)."),
        trained: list[str] = typer.Option([], "--trained", help="METHOD=DIR: a trained MEND checkpoint (on the "
                                          "organism MEND is trained into OUT/data unless given)."),
        trace_facts: int = typer.Option(40, "--trace-facts", help="Facts averaged in the causal trace."),
        samples: int = typer.Option(10, "--samples", help="Noise draws per traced cell."),
        klob_limit: int = typer.Option(20, "--klob-limit", help="KLoB facts and chains (each)."),
        study_cases: int = typer.Option(2, "--study-cases", help="KnowEdit cases per task (the sequential "
                                        "study edits five times as many)."),
        recovery_facts: int = typer.Option(20, "--recovery-facts", help="Facts edited and edited back."),
        recovery_rounds: int = typer.Option(5, "--recovery-rounds", help="Round trips k = 1..K."),
        locate_facts: int = typer.Option(50, "--locate-facts", help="Facts of the locate-vs-edit study."),
        weights_facts: int = typer.Option(20, "--weights-facts", help="Facts of the projection and sparsity study."),
        weights_methods: str = typer.Option(None, "--weights-methods", help="Editors of the projection and "
                                            "sparsity section (default: every weight editor)."),
        recovery_methods: str = typer.Option(None, "--recovery-methods", help="Editors of the recovery section "
                                             "(default: rome, memit, ft-l, ft-m, and mend when trained)."),
        seed: int = typer.Option(0, "--seed", help="Seed of every sample of facts."),
    ) -> None:
        """Make every figure (averaged trace, KLoB, SMAP case, projection and sparsity, recovery, locate-vs-edit,
        KnowEdit tables and curves) and OUT/report.html; a rerun reads the cached data and only redraws."""
        from kelocate.atomic import check_writable
        from kelocate.commands.progress import progress
        from kelocate.errors import KelocateError
        from kelocate.studies.figures import FiguresSettings, make_figures
        from kelocate.studies.figures.run import check_sections

        settings = FiguresSettings(trace_facts, samples, klob_limit, study_cases, recovery_facts, recovery_rounds,
                                   locate_facts, weights_facts, seed, str(facts_file) if facts_file else None,
                                   str(klob_data) if klob_data else None,
                                   {m: v["trained"] for m, v in parse_trained(trained).items()},
                                   weights_methods=parse_names(weights_methods) if weights_methods else None,
                                   recovery_methods=parse_names(recovery_methods) if recovery_methods else None)
        settings.check()
        chosen = [c.replace("-", "_") for c in parse_names(only)]
        check_sections(chosen)
        if out.exists() and not out.is_dir():
            raise KelocateError(f"--out {str(out)!r} is a file; pass a folder")
        check_writable(out)
        loaded = load(model)
        with progress("figures", 8 if not chosen else len(chosen)) as advance:
            run = make_figures(loaded, out, settings, only=chosen or None,
                               progress=lambda done, total, name: advance(done, name),
                               log=lambda text: err_console.print(text, highlight=False, markup=False))
        table = Table("section", "status", "seconds", "figures", title=f"{run.model}: {run.seconds:.0f} s",
                      title_justify="left")
        for s in run.sections:
            status = "not made" if s.skipped else "failed" if s.error else "cached" if s.cached else "computed"
            table.add_row(s.title, status, f"{s.seconds:.0f}", ", ".join(p.name for p in s.figures)
                          or (s.skipped or s.error or ""))
        console.print(table)
        console.print(f"report: {run.report}", highlight=False)
        if run.failed:
            raise KelocateError(f"{len(run.failed)} section(s) failed ({', '.join(s.name for s in run.failed)}: "
                                f"{run.failed[0].error}); the report shows the others")
