"""`kelocate trace`: causal tracing of one prompt, or averaged over a data set (--dataset)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import typer

from kelocate.commands.common import console, err_console, load, user_errors
from kelocate.errors import KelocateError

DEFAULT_OUT = Path("kelocate_out") / "trace"


def slug(text: str, width: int = 60) -> str:
    """A file-name stem from a prompt: 'SMAP was created in' -> 'smap_was_created_in'."""
    stem = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")
    return stem[:width].rstrip("_") or "trace"


def register(app: typer.Typer) -> None:
    @app.command()
    @user_errors
    def trace(
        prompt: str = typer.Argument(
            None, help="Prompt to trace, e.g. 'SMAP was created in' (omit with --dataset)."
        ),
        subject: str = typer.Option(None, "--subject", "-s", help="Words to corrupt (default: inferred)."),
        answer: str = typer.Option(
            None,
            "--answer",
            "-a",
            help="Answer to trace (default: the top token); "
            "a multi-token answer is traced by its first token.",
        ),
        kind: str = typer.Option(
            "all", "--kind", "-k", help="hidden, mlp, attn or all (comma-separated OK)."
        ),
        severed: str = typer.Option(
            None, "--severed", help="Also trace hidden states with mlp or attn severed."
        ),
        samples: int = typer.Option(10, "--samples", "-n", help="Noise samples per cell."),
        noise: str = typer.Option(
            "3sigma", "--noise", help="3sigma, Ksigma, a float scale, or uniform[:SCALE]."
        ),
        replace: bool = typer.Option(False, "--replace", help="Replace the subject embeddings with noise."),
        window: int = typer.Option(
            None,
            "--window",
            "-w",
            help="Layers restored around each layer for mlp/attn (default: scaled to the model's depth).",
        ),
        seed: int = typer.Option(1, "--seed", help="Seed of the noise draws."),
        model: str = typer.Option(
            None,
            "--model",
            "-m",
            help="Local HF model directory or cached hub name (default: the embedded model organism).",
        ),
        device: str = typer.Option(None, help="torch device, e.g. cpu or cuda."),
        dtype: str = typer.Option(None, help="float32 (default), bfloat16, float16."),
        out: Path = typer.Option(DEFAULT_OUT, "--out", "-o", help="Folder for the JSON, npz and figures."),
        formats: str = typer.Option(
            "png,pdf", "--format", help="Figure formats: png, pdf, svg (comma-separated)."
        ),
        as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
        dataset: str = typer.Option(
            None,
            "--dataset",
            help="'organism' or a KnowEdit .json / KLoB-c .jsonl file: "
            "average indirect effects over its facts.",
        ),
        limit: int = typer.Option(
            None, "--limit", help="Trace at most N facts of --dataset (seeded sample)."
        ),
        all_facts: bool = typer.Option(
            False,
            "--all-facts",
            help="With --dataset, also trace facts whose answer "
            "the model does not predict (default: known facts only, as ROME).",
        ),
        include_invalid: bool = typer.Option(
            False, "--include-invalid", help="With --dataset, also average facts whose trace locates nothing "
            "(corruption does not lower p(answer), subject at the last token); default: skip and list them."),
        min_drop: float = typer.Option(
            0.05, "--min-drop", help="Least drop of p(answer) under corruption for a trace to locate anything."),
        single_figures: bool = typer.Option(
            False, "--single-figures", help="Also draw the single-layer MLP/attention heatmaps."),
        engine: str = typer.Option("fast", "--engine", hidden=True, help="fast, oracle or per_cell."),
    ) -> None:
        """Locate where the model recalls a fact (ROME causal tracing) and draw the heatmaps."""
        from kelocate.atomic import atomic_files, check_writable
        from kelocate.locate.causal_trace.tracing import TraceSettings
        from kelocate.plots.style import parse_formats

        settings = TraceSettings(kinds=kind, severed=severed, samples=samples, noise=noise, window=window,
                                 replace=replace, seed=seed, engine=engine, min_drop=min_drop)
        fmts = parse_formats(formats)
        if limit is not None and limit < 1:
            raise KelocateError(f"--limit must be at least 1, got {limit}")
        if dataset is None and not prompt:
            raise KelocateError(
                "give a prompt to trace (e.g. kelocate trace 'SMAP was created in') or --dataset"
            )
        if dataset is not None and prompt:
            raise KelocateError("give either a prompt or --dataset, not both")
        if out.exists() and not out.is_dir():
            raise KelocateError(f"--out {str(out)!r} is a file; pass a folder")
        check_writable(out)  # a bad --out fails now, not after the tracing
        if not 0.0 <= min_drop < 1.0:
            raise KelocateError(f"--min-drop must be in [0, 1), got {min_drop}")
        hooked = load(model, device, dtype)
        if dataset is not None:
            _average(hooked, dataset, limit, settings, out, fmts, as_json, not all_facts, include_invalid)
            return
        from kelocate.locate.causal_trace.tracing import trace as run_trace
        from kelocate.plots.trace import save_trace_figures

        with err_console.status("tracing ..."):
            result = run_trace(hooked, prompt, subject, answer, settings=settings)
        name = slug(prompt)
        with atomic_files(out) as stage:  # the JSON, the npz and the figures appear together, or none
            figures = result.kinds if single_figures else None
            staged = [*result.save(stage / name), *save_trace_figures(result, stage, name, fmts, figures)]
        written = [str(out / p.relative_to(stage)) for p in staged]
        if as_json:
            console.print_json(json.dumps(result.to_dict() | {"written": written}))
            return
        from kelocate.commands.trace_view import trace_panel

        console.print(trace_panel(result, written))


def _average(
    hooked,
    dataset: str,
    limit: int | None,
    settings,  # a TraceSettings
    out: Path,
    fmts: tuple[str, ...],
    as_json: bool,
    require_known: bool,
    include_invalid: bool,
) -> None:
    """`kelocate trace --dataset`: average indirect effects, JSON + figure, a progress bar meanwhile."""
    from kelocate.atomic import atomic_files, write_text
    from kelocate.commands.progress import progress
    from kelocate.locate.causal_trace.average import average_indirect_effect
    from kelocate.organism.datasets import load_trace_facts
    from kelocate.plots.style import save_figure
    from kelocate.plots.trace import average_figure

    facts, source, skipped_on_load = load_trace_facts(hooked, dataset, limit)
    with progress("tracing facts", len(facts)) as advance:
        result = average_indirect_effect(
            hooked,
            facts,
            source,
            require_known=require_known,
            include_invalid=include_invalid,
            on_step=lambda i, f: advance(i, f.prompt),
            skipped_on_load=skipped_on_load,
            settings=settings,
        )
    name = "average_" + slug(Path(dataset).stem if dataset != "organism" else "organism")
    with atomic_files(out) as stage:  # the JSON and the figures appear together, or none of them
        staged = [write_text(stage / f"{name}.json", json.dumps(result, indent=1)),
                  *save_figure(average_figure(result), stage / name, fmts)]
    written = [str(out / p.relative_to(stage)) for p in staged]
    if as_json:
        console.print_json(json.dumps(result | {"written": written}))
        return
    from kelocate.commands.trace_view import average_table, clearest_text, skipped_text

    console.print(average_table(result))
    console.print(clearest_text(result))
    console.print(skipped_text(result))
    console.print("wrote " + ", ".join(written), style="dim")
