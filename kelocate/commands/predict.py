"""`kelocate predict`: the top next tokens after a prompt."""

from __future__ import annotations

import json

import typer
from rich.table import Table

from kelocate.commands.common import console, load, user_errors


def register(app: typer.Typer) -> None:
    @app.command()
    @user_errors
    def predict(
        prompt: str = typer.Argument(..., help="Text whose next token to predict, e.g. 'SMAP was created in'."),
        model: str = typer.Option(None, "--model", "-m", help="Local HF model directory or cached hub name "
                                  "(default: the embedded model organism)."),
        top_k: int = typer.Option(5, "--top-k", "-k", min=1, help="How many tokens to show."),
        device: str = typer.Option(None, help="torch device, e.g. cpu or cuda."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    ) -> None:
        """Print the most likely next tokens after PROMPT with their probabilities."""
        hooked = load(model, device)
        rows = hooked.top_k(prompt, top_k)
        if as_json:
            console.print_json(json.dumps({"prompt": prompt, "model": hooked.name,
                                           "top_k": [{"token": t, "prob": p} for t, p in rows]}))
            return
        table = Table(title=f"{hooked.name}: next token after {prompt!r}")
        table.add_column("#", justify="right")
        table.add_column("token")
        table.add_column("probability", justify="right")
        for i, (tok, p) in enumerate(rows, 1):
            table.add_row(str(i), repr(tok), f"{p:.4f}")
        console.print(table)
