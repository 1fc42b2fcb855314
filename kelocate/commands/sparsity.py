"""`kelocate sparsity --record FILE`: how a saved edit's weight change dW is spread over layers, value
columns and rows (concentration, participation ratio, numerical rank); `kelocate.probes.sparsity` in the API."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from kelocate.commands.common import console, load, user_errors


def _fmt(value: float | None, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


def print_tables(result) -> None:
    """The per-layer mass and the per-parameter measures as rich tables, with the conventions under them."""
    layers = Table(title=f"{result.method} edit: |dW| per layer")
    for column in ("layer", "parameters", "sum |dW|", "||dW||_F", "||dW||_F / ||W||_F"):
        layers.add_column(column, justify="right" if column != "parameters" else "left")
    for m in result.layers:
        layers.add_row("-" if m.layer is None else str(m.layer), str(len(m.parameters)), f"{m.abs_sum:.4g}",
                       f"{m.frobenius:.4g}", _fmt(m.relative, ".3g"))
    console.print(layers)
    table = Table(title="concentration over value columns (mass = squared L2 norm of a column)")
    for column in ("parameter", "shape", "changed", "top-5 share", "top-1% share", "participation ratio",
                   "rank", "stable rank", "top columns"):
        table.add_column(column, justify="left" if column in ("parameter", "top columns") else "right")
    for p in result.parameters:
        c = p.columns
        table.add_row(p.name, "x".join(map(str, p.shape)), f"{p.changed}/{p.shape[0] * p.shape[1]}",
                      _fmt(c.top5_share), f"{_fmt(c.top1pct_share)} ({c.top1pct_count})",
                      f"{_fmt(c.participation_ratio, '.1f')} / {c.n}", str(p.rank.rank),
                      _fmt(p.rank.stable_rank, ".2f"), ", ".join(map(str, c.top)))
    console.print(table)
    for key in ("axes", "participation_ratio", "rank_tolerance"):
        console.print(f"[dim]{key}: {escape(result.conventions[key])}[/]", highlight=False)


def register(app: typer.Typer) -> None:
    @app.command()
    @user_errors
    def sparsity(
        record: Path = typer.Option(..., "--record", "-r", help="An edit record written by "
                                    "`kelocate edit ... --save FILE`."),
        model: str = typer.Option(None, "--model", "-m", help="Check that the record was made on this model "
                                  "(local HF directory or cached name); the measures need only the record."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
        arrays: bool = typer.Option(False, "--arrays", help="With --json: include |dW| and dW^2 summed per "
                                    "column and per row."),
    ) -> None:
        """How a saved edit's dW is spread: per layer, over value columns and rows, and its numerical rank."""
        from kelocate.edit.record import EditRecord
        from kelocate.probes.sparsity import sparsity as measure

        loaded = EditRecord.load(record)
        result = measure(loaded)
        if model is not None:
            loaded.check_model(load(model), fix="pass the model the edit was made on, or leave out --model")
        if as_json:
            console.print_json(result.to_json(arrays=arrays))
            return
        print_tables(result)
