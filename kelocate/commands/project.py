"""`kelocate project`: embedding-space projection (Dar et al.) of a value vector or of a saved edit.

- `kelocate project --layer L --neuron I [--final-norm] [--top-k K]`: the top tokens of neuron I's value
  vector (layer L's `down_proj` column I) through the unembedding.
- `kelocate project --record FILE`: the top five columns of the edit's dW, projected from W and W', with
  Hit@1/10/50 of the new target's first token and the random-column and base-rate controls.

Both are one call of `kelocate.probes.projection` (`project_value`, `project_edit`); `--json` prints its
`to_json()`.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from kelocate.commands.common import console, load, user_errors
from kelocate.errors import KelocateError


def _value_table(result) -> Table:
    how = "final norm, then unembedding" if result.final_norm else "raw, through the unembedding"
    table = Table(title=f"{result.model}: layer {result.layer}, neuron {result.neuron}",
                  caption=f"value vector of norm {result.norm:.3f}, {how}")
    table.add_column("#", justify="right")
    table.add_column("token")
    table.add_column("logit", justify="right")
    for i, tok in enumerate(result.top, 1):
        table.add_row(str(i), tok.token, f"{tok.logit:.4f}")
    return table


def _percent(value: float) -> str:
    return f"{100 * value:.0f}%"


def _edit_tables(result) -> list[Table]:
    """The headline layer's top columns (their tokens before and after) and the Hit@k table per target."""
    layer = result.headline
    columns = Table(title=f"{result.method} edit of {result.model}, layer {layer.layer}: the top {len(layer.columns)} "
                          f"columns of dW ({_percent(layer.column_share)} of its squared norm)")
    columns.add_column("column", justify="right")
    columns.add_column("|dW col|", justify="right")
    columns.add_column("top tokens before (W)")
    columns.add_column("top tokens after (W')")
    for i, column in enumerate(layer.columns):
        columns.add_row(str(column), f"{layer.column_norms[i]:.3g}", " ".join(layer.tokens["before"][i]),
                        " ".join(layer.tokens["after"][i]))
    tables = [columns]
    for target in layer.targets:
        hits = Table(title=f"target {target.target!r} (first token {target.token})")
        hits.add_column("columns")
        for k in result.ks:
            hits.add_column(f"Hit@{k}", justify="right")
        for name, which in (("top dW", target.top), ("random", target.random)):
            for when in ("before", "after", "delta"):
                if when in which:
                    for how in ("any", "mean"):
                        hits.add_row(f"{name} columns, {when}, {how}",
                                     *[_percent(getattr(which[when], how)(k)) for k in result.ks])
        for when in ("before", "after"):
            base = target.base[when]
            hits.add_row(f"base rate, {when}, per column", *[_percent(base.rate(k)) for k in result.ks])
            hits.add_row(f"base rate, {when}, any of {base.drawn}", *[_percent(base.any_of(k)) for k in result.ks])
        tables.append(hits)
    return tables


def register(app: typer.Typer) -> None:
    @app.command()
    @user_errors
    def project(
        layer: int = typer.Option(None, "--layer", "-l", help="Layer of the value vector (with --neuron)."),
        neuron: int = typer.Option(None, "--neuron", "-n", help="Neuron (down_proj column) of the value vector."),
        record: Path = typer.Option(None, "--record", "-r", help="A saved edit record (`kelocate edit ... --save "
                                    "FILE`): project the top columns of its dW."),
        model: str = typer.Option(None, "--model", "-m", help="Local HF model directory or cached hub name "
                                  "(default: the embedded model organism)."),
        final_norm: bool = typer.Option(False, "--final-norm", help="Apply the model's final RMSNorm before the "
                                        "unembedding (default: raw, as Dar et al.)."),
        top_k: int = typer.Option(10, "--top-k", "-k", help="How many tokens to show per vector."),
        columns: int = typer.Option(5, "--columns", help="With --record: how many top dW columns (and random "
                                    "control columns)."),
        seed: int = typer.Option(0, "--seed", help="With --record: seed of the random control columns."),
        device: str = typer.Option(None, help="torch device, e.g. cpu or cuda."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
    ) -> None:
        """Project a value vector (--layer L --neuron I) or an edit's value columns (--record FILE) into the
        vocabulary: the top tokens, and for an edit Hit@k of its new target with controls."""
        from kelocate.probes.projection import project_edit, project_value

        if record is not None and (layer is not None or neuron is not None):
            raise KelocateError("pass either --record FILE or --layer L --neuron I, not both")
        if record is None and (layer is None or neuron is None):
            raise KelocateError("pass --layer L --neuron I (a value vector) or --record FILE (an edit)")
        if record is not None:
            from kelocate.edit import EditRecord

            saved = EditRecord.load(record)
            result = project_edit(load(model, device), saved, n_columns=columns, seed=seed, final_norm=final_norm,
                                  top_k=top_k)
            if as_json:
                console.print_json(json.dumps(result.to_json()))
                return
            for table in _edit_tables(result):
                console.print(table)
            for line in result.choices:
                console.print(f"- {line}", highlight=False)
            return
        result = project_value(load(model, device), layer, neuron, top_k=top_k, final_norm=final_norm)
        if as_json:
            console.print_json(json.dumps(result.to_json()))
            return
        console.print(_value_table(result))
        for line in result.choices:
            console.print(f"- {line}", highlight=False)
