"""`kelocate study case`: the SMAP case (Figure 9): trace a fact, a question that needs its chain and an
unrelated fact of the same subject, compare their top-k layers, and say whether the locator finds the entity or
the fact. A skin over `kelocate.studies.case.run_case` (same numbers)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import typer
from rich.table import Table

from kelocate.commands.common import console, err_console, load, user_errors
from kelocate.errors import KelocateError

DEFAULT_OUT = Path("kelocate_out") / "case"


def _triple(fact: str | None, chain: str | None, unrelated: str | None, subject: str | None):
    """The case the options give (parsed now, before a model loads), or None for the organism's default."""
    from kelocate.studies.case import make_case

    given = {"--fact": fact, "--chain": chain, "--unrelated": unrelated}
    if not any(given.values()):
        return None
    missing = [name for name, value in given.items() if not value]
    if missing:
        raise KelocateError(f"give all three of --fact, --chain and --unrelated (missing {', '.join(missing)}), "
                            "or none of them for the organism's SMAP case")
    return make_case(fact, chain, unrelated, subject)


def register_case(study_app: typer.Typer) -> None:
    """Add `case` to the `kelocate study` group."""

    @study_app.command("case")
    @user_errors
    def case(
        fact: str = typer.Option(None, "--fact", help="The fact, 'PROMPT=>ANSWER' (default on the organism: "
                                 "'SMAP was created in=>Japan')."),
        chain: str = typer.Option(None, "--chain", help="A question that needs the fact's chain, 'PROMPT=>ANSWER' "
                                  "(organism: 'The language of the country where SMAP was created is=>Japanese')."),
        unrelated: str = typer.Option(None, "--unrelated", help="An unrelated fact of the same subject, "
                                      "'PROMPT=>ANSWER' (organism: 'SMAP is a type of=>group')."),
        subject: str = typer.Option(None, "--subject", "-s", help="Words to corrupt in all three prompts "
                                    "(default: inferred from the fact)."),
        model: str = typer.Option(None, "--model", "-m", help="Local HF model directory, fetched name (smollm2) "
                                  "or cached hub name (default: the embedded model organism)."),
        kind: list[str] = typer.Option(None, "--kind", "-k", help="Kinds to trace and compare: hidden, mlp, attn "
                                       "(repeat or comma-separate; default: all three)."),
        samples: int = typer.Option(10, "--samples", "-n", help="Noise samples per cell."),
        seed: int = typer.Option(1, "--seed", help="Seed of the noise draws."),
        token: str = typer.Option("strongest_subject", "--token", help="Row whose layers are ranked: "
                                  "strongest_subject, last_subject, first_subject or last."),
        windowed: bool = typer.Option(False, "--windowed", help="Rank the centres of ROME's windows of MLP/attn "
                                      "layers instead of single restored layers."),
        similarity: str = typer.Option("jaccard", "--similarity", help="jaccard or overlap of top-k layer sets."),
        out: Path = typer.Option(DEFAULT_OUT, "--out", "-o", help="Folder for case.json and the figures."),
        formats: str = typer.Option("png", "--format", help="Figure formats: png, pdf, svg (comma-separated)."),
        force: bool = typer.Option(False, "--force", help="Trace even when an answer is not the model's top token."),
        device: str = typer.Option(None, help="torch device, e.g. cpu or cuda."),
        as_json: bool = typer.Option(False, "--json", help="Print the result (without grids) as JSON."),
    ) -> None:
        """Trace a fact, its chain question and an unrelated fact of one subject; compare their top-k layers."""
        from kelocate.atomic import check_writable
        from kelocate.locate.causal_trace.tracing import TraceSettings
        from kelocate.plots.style import parse_formats
        from kelocate.probes.overlap import check_mode
        from kelocate.studies.case import TOKENS, check_answers, default_case, resolve_subject, run_case, unknown_line

        given = _triple(fact, chain, unrelated, subject)
        settings = TraceSettings(kinds=",".join(kind) if kind else ("hidden", "mlp", "attn"), samples=samples,
                                 seed=seed)
        fmts = parse_formats(formats)
        check_mode(similarity)
        if token not in TOKENS:
            raise KelocateError(f"unknown --token {token!r}; use {', '.join(TOKENS)}")
        if out.exists() and not out.is_dir():
            raise KelocateError(f"--out {str(out)!r} is a file; pass a folder")
        check_writable(out)  # a bad --out fails now, not after the tracing
        hooked = load(model, device)
        the_case = given if given is not None else default_case(hooked)
        if given is None and subject:
            the_case = dataclasses.replace(the_case, subject=subject.strip())
        resolve_subject(hooked, the_case)  # a subject missing from a prompt fails before any tracing
        bad = unknown_line(check_answers(hooked, the_case))
        if bad and not force:
            raise KelocateError(f"not the model's answer: {bad}; choose prompts it answers (`kelocate predict "
                                "PROMPT`) or pass --force to trace anyway")
        if bad:
            err_console.print(f"warning: tracing anyway (--force): {bad}", highlight=False, markup=False)
        with err_console.status("tracing ...") as status:
            result = run_case(hooked, the_case, settings, token=token,
                              window="windowed" if windowed else "single", similarity=similarity,
                              progress=lambda role: status.update(f"tracing the {role} ..."))
        written = result.save(out, fmts)
        if as_json:
            console.print_json(json.dumps(result.summary() | {"written": [str(p) for p in written]}))
            return
        _print(result, written)


def _print(result, written: list[Path]) -> None:
    comp = result.comparison
    for check in result.checks:
        console.print(check.line(), highlight=False, markup=False)
    table = Table(title=f"top-k layer overlap ({comp.similarity}) on {result.model}, subject {result.subject!r}, "
                  f"{comp.window} layers at the {comp.token} token; means over k = 1..K", title_justify="left")
    for column in ("kind", "K", "fact~chain", "fact~unrel", "chain~unrel", "chance", "finds"):
        table.add_column(column, justify="left" if column in ("kind", "finds") else "right")
    for kind in comp.kinds:
        m = comp.means[kind]
        table.add_row(kind, str(comp.depth[kind]), f"{m['fact~chain']:.2f}", f"{m['fact~unrelated']:.2f}",
                      f"{m['chain~unrelated']:.2f}", f"{comp.chance_means[kind]:.2f}", comp.kind_verdicts[kind])
    console.print(table)
    for kind in comp.kinds:
        tops = "; ".join(f"{r} {comp.rankings[kind][r][:3]}" for r in ("fact", "chain", "unrelated"))
        console.print(f"{kind} top 3 layers: {tops}", highlight=False, markup=False)
    console.print(f"verdict: {result.verdict}", highlight=False, markup=False, soft_wrap=True)
    console.print("saved " + ", ".join(str(p) for p in written), highlight=False, markup=False)
