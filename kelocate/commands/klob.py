"""`kelocate klob`: KLoB RSim (consistency, relevance, unbiasedness) of a locator over top-k layers."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from kelocate.commands.common import console, err_console, load, user_errors
from kelocate.errors import KelocateError


def register(app: typer.Typer) -> None:
    @app.command()
    @user_errors
    def klob(
        locator: str = typer.Option("causal-trace", "--locator", help="causal-trace or neurons."),
        kind: str = typer.Option("mlp", "--kind", help="Causal-trace kind: hidden, mlp or attn."),
        data: Path = typer.Option(None, "--data", "-d", help="Folder with KLoB-c.jsonl and KLoB-r.jsonl "
                                  "(default: the organism's KLoB export)."),
        klob_u: Path = typer.Option(None, "--klob-u", help="KLoB-u file (one JSON string of random words "
                                    "per line) for unbiasedness (default: random-word inputs generated from "
                                    "the model's own vocabulary, seeded by --seed)."),
        limit: int = typer.Option(40, "--limit", "-n", min=2, help="Facts and chains to sample (each)."),
        random_limit: int = typer.Option(None, "--random-limit", min=0, help="Random-word inputs to use "
                                         "(default: as many as the factual prompts; 0: no unbiasedness)."),
        similarity: str = typer.Option("jaccard", "--similarity", help="jaccard or overlap of top-k layers."),
        samples: int = typer.Option(10, "--samples", min=1, help="Causal-trace noise samples."),
        steps: int = typer.Option(20, "--steps", min=1, help="Knowledge-neuron IG steps."),
        token: str = typer.Option("last_subject", "--token", help="Causal-trace row: last_subject or last."),
        seed: int = typer.Option(0, "--seed", help="Seed of the record sample."),
        out: Path = typer.Option(Path("kelocate_out") / "klob", "--out", "-o", help="Folder for the JSON and plots."),
        model: str = typer.Option(None, "--model", "-m", help="Local HF model directory or cached hub name "
                                  "(default: the embedded model organism)."),
        device: str = typer.Option(None, help="torch device, e.g. cpu or cuda."),
        as_json: bool = typer.Option(False, "--json", help="Print the curves as JSON."),
    ) -> None:
        """Score a locator with KLoB: RSim curves over k = 1..n_layers, drawn and saved (Figure 8)."""
        from kelocate.atomic import atomic_files, check_writable, write_text
        from kelocate.locate.locators import make_locator
        from kelocate.organism.datasets import organism_klob_dir
        from kelocate.plots.klob import draw_klob_curves
        from kelocate.studies.klob.study import load_klob_data, run_klob_study

        make_locator(locator, kind, steps, samples, token)  # validates the options before loading a model
        if similarity not in ("jaccard", "overlap"):
            raise KelocateError(f"unknown --similarity {similarity!r}; use jaccard or overlap")
        if out.exists() and not out.is_dir():
            raise KelocateError(f"--out {str(out)!r} is a file; pass a folder")
        if klob_u is not None and not klob_u.is_file():
            raise KelocateError(f"--klob-u {str(klob_u)!r} is not a file; pass a KLoB-u file (one JSON string of "
                                "random words per line, ending in ' _'), or omit it to generate random words")
        check_writable(out)  # a bad --out fails now, not after the study
        hooked = load(model, device)
        folder = data if data is not None else organism_klob_dir(hooked)
        records = load_klob_data(folder, limit, random_limit, klob_u, seed, tokenizer=hooked.tokenizer)
        subjects = sorted({f.subject for f in records.facts} | {c.subject for c in records.chains})
        options = {"sigma_subjects": subjects} if locator != "neurons" else {}
        loc = make_locator(locator, kind, steps, samples, token, **options)
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        with Progress(*columns, console=err_console, transient=True) as bar:
            task = bar.add_task(f"locating with {locator}", total=records.n_prompts)
            result = run_klob_study(hooked, loc, records, similarity,
                                    progress=lambda n: bar.advance(task, n), seed=seed)
        name = f"klob_{locator}" + (f"_{kind}" if locator == "causal-trace" else "")
        with atomic_files(out) as stage:  # the JSON and the figures appear together, or none of them
            staged = [write_text(stage / f"{name}.json", json.dumps(result, indent=1)),
                      *draw_klob_curves(result, stage / name)]
        json_path, *figures = [out / p.relative_to(stage) for p in staged]
        if as_json:
            brief = {k: v for k, v in result.items() if k not in ("locations", "details")}
            console.print_json(json.dumps(brief))
            return
        _print(result, [json_path, *figures])


def _print(result: dict, files: list[Path]) -> None:
    n = result["n"]
    title = result["locator"] + (f" ({result['kind']})" if result.get("kind") else "")
    table = Table(title=f"KLoB RSim of {title} on {result['model']}: {n['facts']} facts, {n['chains']} "
                  f"chains, {n['random']} random sentences; {result['similarity']} overlap of top-k layers",
                  title_justify="left")
    table.add_column("k", justify="right")
    names = [k for k in ("consistency", "relevance", "unbiasedness") if result.get(k)]
    for name in names:
        table.add_column(name, justify="right")
    for i, k in enumerate(result["k"]):
        table.add_row(str(k), *(f"{result[name][i]:.3f}" for name in names))
    console.print(table)
    about = result["random_inputs"]["description"]
    console.print(f"random-word inputs: {about}", highlight=False, markup=False, soft_wrap=True)
    if "neuron_level" in result:
        nl = result["neuron_level"]
        console.print("neuron sets: " + ", ".join(f"{k} RSim {v['rsim']:.3f}" for k, v in nl.items()))
    if "profiles" in result:
        console.print(f"layer-score profiles, factual vs random inputs: total-variation distance "
                      f"{result['profiles']['profile_distance']:.3f}")
    if result["skipped"]:
        console.print(f"skipped {len(result['skipped'])} record(s); first: {result['skipped'][0]['reason']}")
    console.print("saved " + ", ".join(str(f) for f in files), highlight=False)
