"""`kelocate study weights`: N facts edited by every weight editor, each edit projected into the vocabulary and
measured for sparsity (`kelocate.studies.weights`); writes OUT/weights.json (+ .npz) and the figures."""

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
    """`studies.weights.summary_table` as a rich table, titled with the model and the common facts."""
    from kelocate.studies.weights import summary_table

    header, rows = summary_table(data["summary"])
    table = Table(*header, title=f"{data['model']}: {len(data['facts'])} facts; Hit@k over the "
                                f"{len(data['summary']['common_facts'])} facts every compared method edited",
                  title_justify="left")
    for row in rows:
        table.add_row(*row)
    return table


def register(study_app: typer.Typer) -> None:
    """Add `weights` to the `kelocate study` group."""

    @study_app.command("weights")
    @user_errors
    def weights_study(
        methods: str = typer.Option(",".join(("kn", "rome", "memit", "pmet", "alphaedit", "ft-l", "ft-m", "mend",
                                              "adalora")), "--methods", help="Weight editors, each run on every fact."),
        compared: str = typer.Option(None, "--compared", help="The methods of the Figure 7 bars (over the facts "
                                     "all of them edit successfully) and of the |dW| heatmaps (default: those of "
                                     "mend, rome, memit, ft-l that --methods runs)."),
        facts: int = typer.Option(20, "--facts", min=1, help="N: known facts, each edited by every method."),
        facts_file: Path = typer.Option(None, "--facts-file", help="A KnowEdit or CounterFact file to take the facts "
                                        "from (needed on a model other than the organism)."),
        seed: int = typer.Option(0, "--seed", help="Seed of the facts (and of the random control columns)."),
        trained: list[str] = typer.Option([], "--trained", help="METHOD=DIR: a trained checkpoint (MEND; on the "
                                          "organism it is trained into OUT/trained/mend when not given)."),
        model: str = typer.Option(None, "--model", "-m", help="The organism (default), or a local/fetched model "
                                  "with --facts-file."),
        out: Path = typer.Option(Path("kelocate_out/study/weights"), "--out", help="Folder for the JSON and figures."),
        formats: str = typer.Option("png", "--formats", help="Figure formats: png, pdf, svg (comma-separated)."),
        as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    ) -> None:
        """Edit N facts with every weight editor: the embedding-space projection of each edit's top dW columns
        (Figure 7) and how dW is spread over the value columns (Figure 6)."""
        from kelocate.atomic import check_writable
        from kelocate.errors import KelocateError
        from kelocate.plots.style import parse_formats
        from kelocate.plots.weights import draw_weights
        from kelocate.studies.weights import COMPARED, WeightsSettings, run_weights

        editors = parse_trained(trained)
        to_train = "mend" in parse_names(methods) and "mend" not in editors
        if to_train:  # trained below into OUT/trained/mend on the organism (resumable); elsewhere an error
            editors["mend"] = {"trained": str(out / "trained" / "mend")}
        chosen = parse_names(methods)
        shown = parse_names(compared) if compared is not None else tuple(m for m in COMPARED if m in chosen)
        settings = WeightsSettings(chosen, shown, facts, seed, editors=editors)
        settings.check()
        kinds = parse_formats(formats)
        check_facts_file(facts_file)
        check_writable(out)
        loaded = load(model)
        if to_train and not loaded.provenance.is_organism:
            raise KelocateError("mend needs a trained checkpoint on this model; pass --trained mend=DIR (see "
                                "`kelocate train mend`) or leave mend out of --methods")
        if to_train:
            from kelocate.studies.knowedit.training import train_for_study

            train_for_study("mend", loaded, out, lambda text: err_console.print(text, highlight=False, markup=False))
        result = run_weights(loaded, settings, facts_file,
                             log=lambda text: err_console.print(text, highlight=False, markup=False))
        written = result.save(out / "weights.json")
        data = result.to_json()
        figures = draw_weights(data, result.heatmaps, out, kinds)
        if as_json:
            console.print_json(json.dumps(data, allow_nan=True))
            return
        console.print(_table(data))
        for line in [*data["summary"]["paper"].values(), data["summary"].get("ft_l_denser_than_rome")]:
            if line:
                console.print(f"- {line}", highlight=False, markup=False)
        paths = [*written, *(p for files in figures.values() for p in files)]
        console.print(f"{result.seconds:.0f} s; written: {', '.join(str(p) for p in paths)}", highlight=False)
