"""`kelocate neurons`: knowledge neurons of a fact (integrated gradients), optionally suppressed/enhanced."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from kelocate.commands.common import console, err_console, load, user_errors
from kelocate.errors import KelocateError
from kelocate.locate.neurons.intervene import logodds


def _change(before: float, after: float) -> str:
    return f"{(after - before) / before * 100:+.1f}%" if before > 0 else "n/a"


def register(app: typer.Typer) -> None:
    @app.command()
    @user_errors
    def neurons(
        prompt: str = typer.Argument(..., help="Prompt to attribute, e.g. 'SMAP was created in'."),
        answer: str = typer.Option(None, "--answer", "-a", help="The answer (may be several tokens); "
                                   "default: the model's own top next token."),
        paraphrase: list[str] = typer.Option(None, "--paraphrase", "-p", help="A paraphrase of the prompt "
                                             "(repeat); with paraphrases the refined neurons are reported."),
        steps: int = typer.Option(20, "--steps", min=1, help="Integrated-gradient steps m."),
        threshold: float = typer.Option(0.2, "--threshold", min=0.0, max=1.0,
                                        help="Coarse neurons: score >= threshold x the largest score."),
        absolute: float = typer.Option(None, "--absolute", help="Coarse neurons: score >= this value."),
        top_k: int = typer.Option(None, "--top-k", min=1, help="At most this many coarse neurons a prompt."),
        share: float = typer.Option(0.7, "--share", min=0.01, max=1.0,
                                    help="Refined neurons: initial fraction p of prompts that must share a "
                                    "neuron (adapted so that 2..5 neurons remain)."),
        fixed_share: bool = typer.Option(False, "--fixed-share", help="Do not adapt --share."),
        do_suppress: bool = typer.Option(False, "--suppress", help="Zero the neurons; report p(answer)."),
        do_enhance: bool = typer.Option(False, "--enhance", help="Double the neurons; report p(answer)."),
        control: int = typer.Option(10, "--control", min=0, help="With --suppress/--enhance: random draws "
                                    "of as many neurons in the same layers, for comparison (0: none)."),
        all_positions: bool = typer.Option(False, "--all-positions", help="Scale the neurons at every "
                                           "position (default: the prompt's last, the one attributed)."),
        target: str = typer.Option("prob", "--target", help="prob: p(answer) (Dai et al.); logprob: log p."),
        layer: list[int] = typer.Option(None, "--layer", "-l", help="Only attribute these layers (repeat)."),
        engine: str = typer.Option("fast", "--engine", help="fast (prefix reuse) or reference (oracle)."),
        show: int = typer.Option(15, "--show", min=1, help="How many neurons to print."),
        model: str = typer.Option(None, "--model", "-m", help="Local HF model directory or cached hub name "
                                  "(default: the embedded model organism)."),
        device: str = typer.Option(None, help="torch device, e.g. cpu or cuda."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
        out: Path = typer.Option(None, "--out", "-o", help="Also save the result as JSON to this file."),
    ) -> None:
        """Find the knowledge neurons of PROMPT -> ANSWER (Dai et al. 2022) and optionally test them."""
        from kelocate.atomic import check_writable
        from kelocate.locate.neurons.find import find_knowledge_neurons
        from kelocate.locate.neurons.intervene import intervene, random_control

        if do_suppress and do_enhance:
            raise KelocateError("--suppress and --enhance exclude each other; pass one of them")
        if target not in ("prob", "logprob"):
            raise KelocateError(f"unknown --target {target!r}; use prob or logprob")
        if out is not None and out.exists() and out.is_dir():
            raise KelocateError(f"--out {str(out)!r} is a folder; pass a file name such as neurons.json")
        if out is not None:
            check_writable(out.parent)  # a bad --out fails now, not after the attribution
        hooked = load(model, device)
        prompts = [prompt, *(paraphrase or [])]
        with err_console.status(f"integrated gradients over {len(prompts)} prompt(s) ..."):
            res = find_knowledge_neurons(hooked, prompts, answer, steps, threshold, absolute, top_k, share,
                                         not fixed_share, target=target, layers=layer or None, engine=engine)
        report = res.to_dict()
        factor = 0.0 if do_suppress else 2.0 if do_enhance else None
        if factor is not None:
            effect = intervene(hooked, res.neurons, prompts, res.answer, factor, all_positions)
            ctl = (random_control(hooked, res.neurons, prompts, res.answer, factor, control,
                                  all_positions=all_positions) if control and res.neurons else None)
            res.intervention = report["intervention"] = {
                "action": "suppress" if do_suppress else "enhance",
                "positions": "all" if all_positions else "last prompt", **effect.to_dict(),
                "random_control": ctl}
        if out is not None:
            res.save(out)
        if as_json:
            console.print_json(json.dumps(report))
            return
        _print(res, hooked.name, show)
        if out is not None:
            console.print(f"saved {out}")


def _print(res, model_name: str, show: int) -> None:
    """Tables: the neurons, then the intervention and its random control."""
    console.print(f"[bold]{model_name}[/]: knowledge neurons of {res.prompts[0]!r} -> {res.answer!r} "
                  f"({len(res.answer_tokens)} answer token(s)); target: {res.target_description}; "
                  f"{res.steps} IG steps, {res.engine} engine, {res.seconds:.2f} s", highlight=False)
    refined = res.refined_p is not None
    how = (f"refined, shared by >= {res.refined_p:.2f} of {len(res.prompts)} prompts" if refined else
           f"coarse, score >= {res.absolute}" if res.absolute is not None else
           f"coarse, score >= {res.threshold} x max")
    cap = f"; top-k {res.top_k}" if res.top_k else ""
    table = Table(title=f"{len(res.neurons)} neuron(s), {how}{cap}", title_justify="left")
    for col in ("layer", "neuron", "score"):
        table.add_column(col, justify="right")
    if refined:
        table.add_column("prompts", justify="right")
    for layer, idx in res.neurons[:show]:
        score = res.score_of((layer, idx))
        row = [str(layer), str(idx), f"{score:.3g}" if score is not None else "-"]
        if refined:
            row.append(f"{res.refined_counts.get((layer, idx), 0)}/{len(res.prompts)}")
        table.add_row(*row)
    console.print(table)
    if len(res.neurons) > show:
        console.print(f"... and {len(res.neurons) - show} more (--show N, --json)")
    for note in res.notes:
        console.print(f"[yellow]note:[/] {note}", highlight=False)
    iv = res.intervention
    if not iv:
        return
    verb = "suppressing (x0)" if iv["action"] == "suppress" else "enhancing (x2)"
    t = Table(title=f"p({res.answer}), {verb} {len(res.neurons)} neuron(s)", title_justify="left")
    for col in ("prompt", "before", "after", "change", "log-odds change"):
        t.add_column(col, justify="left" if col == "prompt" else "right")
    for q, b, a in zip(res.prompts, iv["before"], iv["after"], strict=True):
        t.add_row(q, f"{b:.4f}", f"{a:.4f}", _change(b, a), f"{logodds(a) - logodds(b):+.3f}")
    console.print(t)
    ctl = iv.get("random_control")
    if ctl:
        found = iv["mean_relative_change"] * 100
        mean, low, high = (ctl[f"{k}_relative_change"] * 100 for k in ("mean", "min", "max"))
        console.print(f"mean change of p({res.answer}): found neurons {found:+.2f}% (log-odds "
                      f"{iv['mean_logodds_change']:+.3f}); {len(res.neurons)} random neurons in the same "
                      f"layers ({ctl['draws']} draws) {mean:+.2f}% (min {low:+.2f}%, max {high:+.2f}%; "
                      f"log-odds {ctl['mean_logodds_change']:+.3f})", highlight=False)
