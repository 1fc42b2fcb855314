"""`kelocate study recovery`: edit N facts and edit them back, K times, in the world and in the model
(`kelocate.studies.recovery`); writes OUT/recovery.json and the figure OUT/recovery.<fmt>, each atomically."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from kelocate.commands.common import (
    check_facts_file,
    console,
    err_console,
    load,
    parse_names,
    parse_trained,
    user_errors,
)


def _table(data: dict) -> Table:
    """Per run, round 1 and the last round: weight distance, recall of the edited facts' original answers and of
    every other known fact, KL, seconds."""
    table = Table("run", "round", "weight dist.", "edited recall", "other recall", "subject's other", "KL", "s")
    base = data["baseline"]
    table.add_row("unedited", "0", "0", f"{base['edited_recall']:.3f}", f"{base['other_recall']:.4f}",
                  f"{base['neighbour_recall']:.3f}", "0", "")
    for run in data["runs"]:
        if run["error"]:
            table.add_row(run["label"], "-", f"error: {run['error']}", "", "", "", "", f"{run['seconds']:.1f}")
        shown = run["rounds"][:1] + run["rounds"][1:][-1:]
        for row in shown:
            table.add_row(run["label"], str(row["round"]), f"{row['distance_mean']:.4f}",
                          f"{row['edited_recall']:.3f}", f"{row['other_recall']:.4f}",
                          f"{row['neighbour_recall']:.3f}", f"{row['kl']:.3g}", f"{row['seconds']:.1f}")
    return table


def register(study_app: typer.Typer) -> None:
    """Add `recovery` to the `kelocate study` group."""

    @study_app.command("recovery")
    @user_errors
    def recovery(
        methods: str = typer.Option("rome,memit,ft-l,ft-m,kn,alphaedit", "--methods",
                                    help="Weight editors, each run one fact at a time."),
        batch: str = typer.Option("memit", "--batch", help="Editors also run as one batch of all facts "
                                  "(memit, pmet, alphaedit; 'none' for none)."),
        control: str = typer.Option("rome", "--control", help="Editors also run as the control: the edits "
                                    "reverted bit for bit instead of edited back ('none' for none)."),
        facts: int = typer.Option(20, "--facts", min=1, help="N: known facts edited o -> o' and back."),
        rounds: int = typer.Option(5, "--rounds", min=1, help="K: round trips o -> o' -> o (k = 1..K drawn)."),
        unrelated: int = typer.Option(100, "--unrelated", min=0, help="Unrelated prompts for the KL."),
        seed: int = typer.Option(0, "--seed", help="Seed of the facts and their new objects."),
        trained: list[str] = typer.Option([], "--trained", help="METHOD=DIR: a trained checkpoint (MEND)."),
        facts_file: Path = typer.Option(None, "--facts-file", help="A KnowEdit or CounterFact file to take the facts "
                                        "and the graph from (needed on a model other than the organism)."),
        model: str = typer.Option(None, "--model", "-m", help="The organism (default), or a local/fetched model "
                                  "with --facts-file."),
        out: Path = typer.Option(Path("kelocate_out/study/recovery"), "--out", help="Folder for the JSON and figure."),
        formats: str = typer.Option("png", "--formats", help="Figure formats: png, pdf, svg (comma-separated)."),
        as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    ) -> None:
        """Edit N facts o -> o' and back o' -> o, K times, in the knowledge graph and in the model: is either
        restored? Writes OUT/recovery.json and OUT/recovery.<fmt>."""
        from kelocate.plots.recovery import draw_recovery
        from kelocate.plots.style import parse_formats
        from kelocate.studies.recovery import RecoverySettings, run_recovery

        settings = RecoverySettings(parse_names(methods), facts, rounds, parse_names(batch), parse_names(control),
                                    unrelated, seed, parse_trained(trained))
        settings.check()
        kinds = parse_formats(formats)
        check_facts_file(facts_file)
        loaded = load(model)
        result = run_recovery(loaded, settings, log=lambda text: err_console.print(text, highlight=False),
                              facts_file=facts_file)
        data = result.to_json()
        path = result.save(out / "recovery.json")
        figures = draw_recovery(data, out / "recovery", kinds)
        if as_json:
            console.print_json(json.dumps(data))
            return
        console.print(_table(data))
        console.print(f"written: {path}, {', '.join(str(f) for f in figures)}; model restored: {result.restored}",
                      highlight=False)
