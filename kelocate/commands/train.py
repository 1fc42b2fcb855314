"""`kelocate train mend`: train a MEND hypernetwork (the organism's training edits by default), with a
progress bar, atomic checkpoints every --save-every steps, a loss log, and resumption by rerunning."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from kelocate.commands.common import console, err_console, load, user_errors
from kelocate.errors import KelocateError


def read_training_edits(path: Path):
    """A JSON list / JSONL of {prompt, subject, target_new, paraphrases?, unrelated?} records."""
    from kelocate.edit.mend import TrainingEdit
    from kelocate.edit.request import EditRequest

    if not path.is_file():
        raise KelocateError(f"--data {str(path)!r} does not exist; pass a JSON or JSONL file of edits")
    text = path.read_text()
    try:
        rows = [json.loads(line) for line in text.splitlines() if line.strip()] if path.suffix == ".jsonl" \
            else json.loads(text)
    except json.JSONDecodeError as exc:
        raise KelocateError(f"--data {str(path)!r} is not valid JSON ({exc}); fix the file") from None
    out = []
    for i, row in enumerate(rows):
        fields = ("prompt", "subject", "target_new")
        if not isinstance(row, dict) or not all(isinstance(row.get(k), str) for k in fields):
            raise KelocateError(f"--data {str(path)!r} record {i} needs prompt, subject and target_new strings")
        request = EditRequest(row["prompt"], row["subject"], row["target_new"],
                              paraphrases=tuple(row.get("paraphrases") or ()))
        out.append(TrainingEdit(request, tuple(row.get("unrelated") or ())))
    return out


def register(app: typer.Typer) -> None:
    train_app = typer.Typer(help="Train the editors that learn (MEND).", no_args_is_help=True)
    app.add_typer(train_app, name="train")

    @train_app.command("mend")
    @user_errors
    def mend(
        out: Path = typer.Option(..., "--out", help="Folder for checkpoints and the loss log (rerun to resume)."),
        data: Path = typer.Option(None, "--data", help="Training edits (JSON/JSONL); default: the organism's."),
        model_name: str = typer.Option(None, "--model", help="Model (default: the organism)."),
        layers: str = typer.Option(None, "--layers", help="MLP layers to edit, e.g. 3-5 (default: the last 3)."),
        steps: int = typer.Option(None, "--steps", min=1, help="Training steps (default: the profile's)."),
        batch_size: int = typer.Option(None, "--batch-size", min=1, help="Edits per step."),
        save_every: int = typer.Option(50, "--save-every", min=1, help="Checkpoint every N steps."),
        n_edits: int = typer.Option(400, "--edits", min=1, help="Organism training edits to draw."),
    ) -> None:
        """Train a MEND hypernetwork; killed, it resumes from its last checkpoint when rerun."""
        from kelocate.commands.progress import progress
        from kelocate.commands.stats import parse_layers
        from kelocate.edit.config import resolve
        from kelocate.edit.mend import MENDConfig, train

        examples = read_training_edits(data) if data is not None else None
        model = load(model_name)
        if examples is None:
            if model.source.get("family") != "organism":
                raise KelocateError("only the organism has built-in training edits; pass --data FILE for this model")
            from kelocate.organism import world_file
            from kelocate.organism.world import load_world
            from kelocate.studies.edit_eval import organism_training_edits

            examples = organism_training_edits(model, load_world(world_file(model.path)), n_edits)
        hp = resolve("mend", model)
        chosen = parse_layers(layers) if layers else list(range(model.n_layers - 3, model.n_layers))
        config = MENDConfig(layers=chosen or list(range(model.n_layers)), rank=hp["rank"], lr_init=hp["lr_init"],
                            c_edit=hp["c_edit"], lr=hp["train_lr"], steps=steps or hp["train_steps"],
                            batch_size=batch_size or hp["train_batch_size"], save_every=save_every)
        with progress("training MEND", config.steps) as advance:
            summary = train(model, examples, out, config,
                            progress=lambda step, total, row: advance(step, f"loss {row['loss']:.4f}"))
        if summary["resumed_from"]:
            err_console.print(f"resumed from the checkpoint at step {summary['resumed_from']}")
        console.print(f"MEND for layers {config.layers}: {len(examples)} training edits, {config.steps} steps, "
                      f"loss {summary['first']['loss'] if summary['first'] else '-'} -> "
                      f"{summary['last']['loss'] if summary['last'] else '-'}; checkpoint in {out} "
                      f"(edit with `kelocate edit ... --method mend --hypernet {out}`)", highlight=False)
