"""CLI command groups; each module registers its commands on the typer app given to `register`."""
