"""`kelocate study locate-vs-edit`: does the traced effect of a layer predict how well ROME edits there
(`kelocate.studies.locate_vs_edit`)? Writes OUT/locate_vs_edit.json and the figure OUT/locate_vs_edit.<fmt>."""

from __future__ import annotations

import json
import math
from pathlib import Path

import typer
from rich.table import Table

from kelocate.commands.common import check_facts_file, console, err_console, load, user_errors


def _num(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _table(data: dict) -> Table:
    """Per metric: pooled Pearson / Spearman, mean within-fact r, auto vs fixed."""
    table = Table("metric", "Pearson (pooled)", "Spearman (pooled)", "within-fact Pearson", "within-fact Spearman",
                  "facts with r", "auto layer", f"fixed layer {data['fixed_layer']}", "auto wins/ties/losses")
    for metric, m in data["summary"]["metrics"].items():
        table.add_row(metric, _num(m["pooled"]["pearson"]), _num(m["pooled"]["spearman"]), _num(m["within_pearson"]),
                      _num(m["within_spearman"]), str(m["within_facts"]), _num(m["auto_mean"]), _num(m["fixed_mean"]),
                      f"{m['auto_wins']}/{m['ties']}/{m['fixed_wins']}")
    return table


def register(study_app: typer.Typer) -> None:
    """Add `locate-vs-edit` to the `kelocate study` group."""

    @study_app.command("locate-vs-edit")
    @user_errors
    def locate_vs_edit(
        facts: int = typer.Option(20, "--facts", min=1, help="N: known facts, each traced and edited at every layer."),
        samples: int = typer.Option(10, "--samples", min=1, help="Noise draws per traced cell."),
        seed: int = typer.Option(0, "--seed", help="Seed of the facts and their new targets."),
        mom2_samples: int = typer.Option(None, "--mom2-samples", min=1,
                                         help="ROME's key-statistics samples (default: the profile's)."),
        facts_file: Path = typer.Option(None, "--facts-file", help="A KnowEdit or CounterFact file to take the facts "
                                        "from (needed on a model other than the organism)."),
        model: str = typer.Option(None, "--model", "-m", help="The organism (default), or a local/fetched model "
                                  "with --facts-file."),
        out: Path = typer.Option(Path("kelocate_out/study/locate_vs_edit"), "--out",
                                 help="Folder for the JSON and figure."),
        formats: str = typer.Option("png", "--formats", help="Figure formats: png, pdf, svg (comma-separated)."),
        as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    ) -> None:
        """Trace N facts (single-layer MLP effect at the edit token) and edit each at every layer with ROME: does
        the effect predict the edit's success, and does the largest-effect layer beat the profile's?"""
        from kelocate.plots.locate_vs_edit import draw_locate_vs_edit
        from kelocate.plots.style import parse_formats
        from kelocate.studies.locate_vs_edit import LocateVsEditSettings, run_locate_vs_edit

        overrides = {} if mom2_samples is None else {"mom2_n_samples": mom2_samples}
        settings = LocateVsEditSettings(facts=facts, samples=samples, seed=seed, overrides=overrides)
        settings.check()
        kinds = parse_formats(formats)
        check_facts_file(facts_file)
        loaded = load(model)
        result = run_locate_vs_edit(loaded, settings, facts_file=facts_file,
                                    log=lambda text: err_console.print(text, highlight=False, markup=False))
        data = result.to_json()
        path = result.save(out / "locate_vs_edit.json")
        figures = draw_locate_vs_edit(data, out / "locate_vs_edit", kinds)
        if as_json:
            console.print_json(json.dumps(data, allow_nan=True))
            return
        console.print(_table(data))
        console.print(f"{len(result.facts)} facts, token {result.token!r}, {result.seconds:.0f} s; written: {path}, "
                      f"{', '.join(str(f) for f in figures)}", highlight=False)
