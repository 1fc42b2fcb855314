"""`kelocate train mend` / `kelocate train serac`: train MEND's hypernetwork or SERAC's scope classifier and
counterfactual model (the organism's training edits by default), with a progress bar, atomic checkpoints
every --save-every steps, a loss log, and resumption by rerunning the same command."""

from __future__ import annotations

from pathlib import Path

import typer

from kelocate.commands.common import console, err_console, load, user_errors
from kelocate.errors import KelocateError


def read_training_edits(path: Path, option: str = "--data"):
    """The training edits of a file (`kelocate.data.training.read_training_file`: a JSON list / JSONL of
    {prompt, subject, target_new, ground_truth?, paraphrases?, unrelated?, neighbours?} records, or a
    KnowEdit task file), as the editors' `TrainingEdit`s."""
    from kelocate.data.training import read_training_file
    from kelocate.edit.training import TrainingEdit

    return [TrainingEdit.from_record(record) for record in read_training_file(path, option)]


def organism_edits(model, n_edits: int, draws: int = 1):
    """The organism's own training edits (never its evaluation cases); other models need --data."""
    if not model.provenance.is_organism:
        raise KelocateError("only the organism has built-in training edits; pass --data FILE for this model")
    from kelocate.organism import world_file
    from kelocate.organism.datasets import organism_training_edits
    from kelocate.organism.world import load_world

    return organism_training_edits(model, load_world(world_file(model.path)), n_edits, draws=draws)


def register(app: typer.Typer) -> None:
    train_app = typer.Typer(help="Train the editors that learn (MEND, SERAC).", no_args_is_help=True)
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
        from kelocate.edit.registry import method

        profile_config, train = method("mend").config_function(), method("mend").train_function()

        examples = read_training_edits(data) if data is not None else None  # a bad file fails before loading
        model = load(model_name)
        examples = examples if examples is not None else organism_edits(model, n_edits)
        chosen = parse_layers(layers) if layers else []  # None: 'all'; []: the profile's default (last three)
        config = profile_config(model, list(range(model.n_layers)) if chosen is None else chosen, steps=steps,
                                batch_size=batch_size, save_every=save_every)
        with progress("training MEND", config.steps) as advance:
            summary = train(model, examples, out, config,
                            progress=lambda step, total, row: advance(step, f"loss {row['loss']:.4f}"))
        finished("MEND", summary, f"{len(examples)} training edits, layers {config.layers}", out, "mend")

    @train_app.command("serac")
    @user_errors
    def serac(
        out: Path = typer.Option(..., "--out", help="Folder for checkpoints and the loss log (rerun to resume)."),
        data: Path = typer.Option(None, "--data", help="Training edits (JSON/JSONL); default: the organism's."),
        model_name: str = typer.Option(None, "--model", help="Model (default: the organism)."),
        classifier_steps: int = typer.Option(None, "--classifier-steps", min=0, help="Scope classifier steps."),
        cf_steps: int = typer.Option(None, "--cf-steps", min=0, help="Counterfactual model steps."),
        save_every: int = typer.Option(50, "--save-every", min=1, help="Checkpoint every N steps."),
        n_edits: int = typer.Option(400, "--edits", min=1, help="Organism training facts to draw."),
        draws: int = typer.Option(8, "--draws", min=1, help="Organism: new targets drawn per training fact."),
    ) -> None:
        """Train SERAC's scope classifier, then its counterfactual model; killed, it resumes when rerun."""
        from kelocate.commands.progress import progress
        from kelocate.edit.registry import method

        profile_config, train = method("serac").config_function(), method("serac").train_function()

        examples = read_training_edits(data) if data is not None else None
        model = load(model_name)
        examples = examples if examples is not None else organism_edits(model, n_edits, draws)
        config = profile_config(model, classifier_steps=classifier_steps, cf_steps=cf_steps, save_every=save_every)
        if config.steps == 0:
            raise KelocateError("nothing to train: --classifier-steps and --cf-steps are both 0")
        with progress("training SERAC", config.steps) as advance:
            summary = train(model, examples, out, config,
                            progress=lambda step, total, row: advance(step, f"{row['phase']} loss {row['loss']:.4f}"))
        finished("SERAC", summary, f"{len(examples)} training edits", out, "serac")


def finished(what: str, summary: dict, detail: str, out: Path, method: str) -> None:
    """The closing lines of a training command."""
    if summary["resumed_from"]:
        err_console.print(f"resumed from the checkpoint at step {summary['resumed_from']}")
    first, last = summary["first"], summary["last"]
    console.print(f"{what}: {detail}, {summary['steps']} steps, loss {first['loss'] if first else '-'} -> "
                  f"{last['loss'] if last else '-'}; checkpoint in {out} (edit with `kelocate edit ... --method "
                  f"{method} --trained {out}`)", highlight=False)
