"""`kelocate train METHOD`: one command per trainable method of the registry (`registry.TRAINABLE`: MEND's
hypernetwork; SERAC's scope classifier, then its counterfactual model), on a file of training edits
(--data) or the organism's own, with a progress bar, atomic checkpoints every --save-every steps, a loss
log, and resumption by rerunning the same command.

Every command has the same options around the method's own: --out, --data, --model, then what its training
config takes (`OWN`: MEND's --layers, --steps, --batch-size; SERAC's --classifier-steps, --cf-steps), then
--save-every, --edits and, for a method that draws several new targets per organism training fact
(`Method.training_draws` > 1), --draws with that default. The label, trainer and training config come from
the registry; a trainable method missing from `OWN` fails when the CLI is built (tests/test_cli.py).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer

from kelocate.commands.common import console, err_console, load, parse_layers, user_errors
from kelocate.edit import registry
from kelocate.errors import KelocateError


def option(name: str, kind: type, default: Any, flag: str, **settings: Any) -> inspect.Parameter:
    """The keyword parameter `name` of a typer command: option `flag` with `default` and typer's `settings`."""
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=typer.Option(default, flag, **settings),
                             annotation=kind)


@dataclass(frozen=True)
class OwnOptions:
    """What `kelocate train NAME` has of its own: its help, its options and how they make its training config."""

    summary: str  # the command's help
    edits_help: str  # --edits' help: what one organism draw is
    options: tuple[inspect.Parameter, ...]  # listed after --model, in this order
    config: Callable[..., Any]  # config(model, profile_config, save_every, **options) -> the training config
    detail: Callable[[Any], str] = lambda config: ""  # after "N training edits" in the closing line


def mend_config(model, profile_config, save_every: int, layers: str | None, steps: int | None,
                batch_size: int | None):
    chosen = parse_layers(layers) if layers else []  # None: 'all'; []: the profile's default (last three)
    return profile_config(model, list(range(model.n_layers)) if chosen is None else chosen, steps=steps,
                          batch_size=batch_size, save_every=save_every)


def serac_config(model, profile_config, save_every: int, classifier_steps: int | None, cf_steps: int | None):
    config = profile_config(model, classifier_steps=classifier_steps, cf_steps=cf_steps, save_every=save_every)
    if config.steps == 0:
        raise KelocateError("nothing to train: --classifier-steps and --cf-steps are both 0")
    return config


OWN: dict[str, OwnOptions] = {
    "mend": OwnOptions(
        "Train a MEND hypernetwork; killed, it resumes from its last checkpoint when rerun.",
        "Organism training edits to draw.",
        (option("layers", str, None, "--layers", help="MLP layers to edit, e.g. 3-5 (default: the last 3)."),
         option("steps", int, None, "--steps", min=1, help="Training steps (default: the profile's)."),
         option("batch_size", int, None, "--batch-size", min=1, help="Edits per step.")),
        mend_config, detail=lambda config: f", layers {config.layers}"),
    "serac": OwnOptions(
        "Train SERAC's scope classifier, then its counterfactual model; killed, it resumes when rerun.",
        "Organism training facts to draw.",
        (option("classifier_steps", int, None, "--classifier-steps", min=0, help="Scope classifier steps."),
         option("cf_steps", int, None, "--cf-steps", min=0, help="Counterfactual model steps.")),
        serac_config),
}


def loss_text(row: dict) -> str:
    """The progress bar's detail for one loss-log row ('loss 0.1234', with the phase where training has phases)."""
    loss = f"loss {row['loss']:.4f}"
    return f"{row['phase']} {loss}" if "phase" in row else loss


def train_method(entry: registry.Method, own: OwnOptions, out: Path, data: Path | None, model_name: str | None,
                 save_every: int, n_edits: int, draws: int, options: dict[str, Any]) -> None:
    """Train `entry`'s method into `out`, on `data`'s edits or the organism's, and print the closing lines."""
    from kelocate.commands.progress import progress
    from kelocate.edit.training import read_training_edits

    profile_config, train = entry.config_function(), entry.train_function()
    examples = read_training_edits(data) if data is not None else None  # a bad file fails before loading
    model = load(model_name)
    if examples is None:
        from kelocate.organism.datasets import organism_training_edits_for

        examples = organism_training_edits_for(model, "it has no built-in training edits; pass --data FILE",
                                               n_edits, draws)
    config = own.config(model, profile_config, save_every, **options)
    with progress(f"training {entry.label}", config.steps) as advance:
        summary = train(model, examples, out, config, progress=lambda step, total, row: advance(step, loss_text(row)))
    finished(entry.label, summary, f"{len(examples)} training edits{own.detail(config)}", out, entry.name)


def command(entry: registry.Method) -> Callable[..., None]:
    """The typer command of a trainable method: the shared options around its own (`OWN`)."""
    if entry.name not in OWN:
        raise RuntimeError(f"`kelocate train {entry.name}` has no options: add {entry.name!r} to "
                           "kelocate.commands.train.OWN")
    own = OWN[entry.name]
    shared = ("out", "data", "model_name", "save_every", "n_edits")
    parameters = [
        option("out", Path, ..., "--out", help="Folder for checkpoints and the loss log (rerun to resume)."),
        option("data", Path, None, "--data", help="Training edits (JSON/JSONL); default: the organism's."),
        option("model_name", str, None, "--model", help="Model (default: the organism)."),
        *own.options,
        option("save_every", int, 50, "--save-every", min=1, help="Checkpoint every N steps."),
        option("n_edits", int, 400, "--edits", min=1, help=own.edits_help),
    ]
    if entry.training_draws > 1:
        parameters.append(option("draws", int, entry.training_draws, "--draws", min=1,
                                 help="Organism: new targets drawn per training fact."))

    def train(**given: Any) -> None:
        draws = given.pop("draws", entry.training_draws)
        train_method(entry, own, **{name: given.pop(name) for name in shared}, draws=draws, options=given)

    train.__signature__ = inspect.Signature(parameters)  # what typer reads the options from
    train.__annotations__ = {p.name: p.annotation for p in parameters}
    train.__doc__ = own.summary
    return user_errors(train)


def register(app: typer.Typer) -> None:
    labels = ", ".join(registry.method(name).label for name in registry.TRAINABLE)
    train_app = typer.Typer(help=f"Train the editors that learn ({labels}).", no_args_is_help=True)
    app.add_typer(train_app, name="train")
    for name in registry.TRAINABLE:
        train_app.command(name)(command(registry.method(name)))


def finished(what: str, summary: dict, detail: str, out: Path, method: str) -> None:
    """The closing lines of a training command."""
    if summary["resumed_from"]:
        err_console.print(f"resumed from the checkpoint at step {summary['resumed_from']}")
    first, last = summary["first"], summary["last"]
    console.print(f"{what}: {detail}, {summary['steps']} steps, loss {first['loss'] if first else '-'} -> "
                  f"{last['loss'] if last else '-'}; checkpoint in {out} (edit with `kelocate edit ... --method "
                  f"{method} --trained {out}`)", highlight=False)
