"""`kelocate neurons`: knowledge neurons of a fact (integrated gradients), optionally suppressed/enhanced.

With --suppress/--enhance two controls run: as many random neurons in the same layers (do the found
neurons matter?), and the same neurons on other facts of the fact's relation and on unrelated facts (are
they the fact's, or the relation's?). Control facts come from the organism's world, a --facts file or
--control-prompt; this module reads them and hands plain (prompt, answer) pairs down to `locate`.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from kelocate.commands.common import SEPARATOR, console, err_console, load, parse_fact, user_errors
from kelocate.data.facts import read_fact_file
from kelocate.errors import KelocateError
from kelocate.locate.neurons.intervene import logodds
from kelocate.studies.neuron_controls import ControlFacts, choose_control_facts, file_relation

CONTROLS = ("same-relation", "random", "none")
N_CONTROL = 5  # control facts per group picked from the organism or a fact file

CONTROL_HELP = ("Controls of --suppress/--enhance. same-relation: the random-neuron control plus the same "
                "neurons on other facts of the relation and on unrelated facts (relation neurons move the "
                "other facts too); random: only as many random neurons in the same layers; none. Default: "
                "same-relation where other facts of the relation are known (the organism's world, --facts, "
                "--control-prompt), else random. An integer N is read as 'random' with N draws (0: none).")
FACT_HELP = (f"A control fact of PROMPT's relation, written PROMPT{SEPARATOR}ANSWER, e.g. 'The capital of France "
             f"is{SEPARATOR}Paris' (repeat; the last '{SEPARATOR}' splits; replaces the facts picked from the "
             "organism or --facts).")


# ====================================================================== parsing options


def parse_control(control: str | None) -> tuple[str | None, int | None]:
    """(mode, random draws) of --control; None: decide later; an integer N is random with N draws."""
    if control is None:
        return None, None
    value = control.strip().lower()
    if value.isdigit():
        return ("random" if int(value) else "none"), int(value)
    if value not in CONTROLS:
        raise KelocateError(f"unknown --control {control!r}; use {', '.join(CONTROLS)}")
    return value, None


# ====================================================================== the command


def _check_options(do_suppress: bool, do_enhance: bool, target: str, out: Path | None, has_facts: bool,
                   mode: str | None) -> None:
    if do_suppress and do_enhance:
        raise KelocateError("--suppress and --enhance exclude each other; pass one of them")
    if has_facts and not (do_suppress or do_enhance):
        raise KelocateError("control facts are measured under an intervention; add --suppress or --enhance")
    if has_facts and mode in ("random", "none"):
        raise KelocateError(f"control facts need --control same-relation (got --control {mode})")
    if target not in ("prob", "logprob"):
        raise KelocateError(f"unknown --target {target!r}; use prob or logprob")
    if out is not None and out.exists() and out.is_dir():
        raise KelocateError(f"--out {str(out)!r} is a folder; pass a file name such as neurons.json")


def _check_source(model, mode: str | None, acting: bool, has_facts: bool) -> None:
    """--control same-relation needs control facts: given, in a file, or in the organism's world."""
    from kelocate.organism import world_file

    if mode == "same-relation" and acting and not has_facts and world_file(model.path) is None:
        raise KelocateError("--control same-relation needs other facts of the relation: this model has no "
                            "organism world; pass --control-prompt 'PROMPT=>ANSWER' or --facts FILE")


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
        control: str = typer.Option(None, "--control", help=CONTROL_HELP),
        draws: int = typer.Option(10, "--draws", min=1, help="Random-neuron control: how many random sets."),
        control_prompt: list[str] = typer.Option(None, "--control-prompt", help=FACT_HELP),
        unrelated_prompt: list[str] = typer.Option(None, "--unrelated-prompt", help="An unrelated control "
                                                   f"fact, written PROMPT{SEPARATOR}ANSWER (repeat), e.g. "
                                                   f"'The chemical symbol for gold is{SEPARATOR}Au'."),
        facts: Path = typer.Option(None, "--facts", help="Control facts: a .json list or .jsonl of {prompt, "
                                   "subject, answer, relation} records; those of PROMPT's relation (all, "
                                   "without relations) are the same-relation group, the others unrelated."),
        relation: str = typer.Option(None, "--relation", help="PROMPT's relation in --facts (default: that "
                                     "of the record with PROMPT)."),
        n_control: int = typer.Option(N_CONTROL, "--control-facts", min=1, help="Control facts per group "
                                      "picked (seeded) from the organism or --facts, among those known."),
        seed: int = typer.Option(0, "--seed", help="Seed of the random neurons and of the control facts."),
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

        given_same = [parse_fact(t, "--control-prompt") for t in control_prompt or []]
        given_unrelated = [parse_fact(t, "--unrelated-prompt") for t in unrelated_prompt or []]
        mode, legacy_draws = parse_control(control)
        prompts = [prompt, *(paraphrase or [])]
        if relation is not None and facts is None:
            raise KelocateError("--relation names the prompt's relation in a --facts file; pass --facts FILE")
        records = read_fact_file(facts) if facts is not None else None
        relation = file_relation(records, prompts, relation) if records is not None else None
        has_facts = bool(given_same or given_unrelated or records)
        _check_options(do_suppress, do_enhance, target, out, has_facts, mode)
        if out is not None:
            check_writable(out.parent)  # a bad --out fails now, not after the attribution
        hooked = load(model, device)
        _check_source(hooked, mode, do_suppress or do_enhance, has_facts)
        with err_console.status(f"integrated gradients over {len(prompts)} prompt(s) ..."):
            res = find_knowledge_neurons(hooked, prompts, answer, steps, threshold, absolute, top_k, share,
                                         not fixed_share, target=target, layers=layer or None, engine=engine)
        factor = 0.0 if do_suppress else 2.0 if do_enhance else None
        if factor is not None:
            chosen = None
            if mode in (None, "same-relation"):
                chosen = choose_control_facts(hooked, prompts, res.answer, given_same, given_unrelated, records,
                                              facts, relation, n_control, seed)
                if mode == "same-relation" and not chosen.same:
                    raise KelocateError(f"--control same-relation found no other known fact of the relation: "
                                        f"{chosen.notes[-1]}")
                mode = "same-relation" if chosen.same or chosen.unrelated else "random"
                res.notes += chosen.notes
            with err_console.status("suppressing/enhancing the neurons and their controls ..."):
                res.intervention = _intervene(hooked, res, prompts, factor, all_positions, mode,
                                              legacy_draws or draws, seed, chosen)
        if out is not None:
            res.save(out)
        if as_json:
            console.print_json(json.dumps(res.to_dict()))
            return
        _print(res, hooked.name, show)
        if out is not None:
            console.print(f"saved {out}")


def _intervene(hooked, res, prompts: list[str], factor: float, all_positions: bool, mode: str, draws: int,
               seed: int, chosen: ControlFacts | None) -> dict:
    """The intervention on the fact, its random-neuron control and its specificity control (JSON-ready)."""
    from kelocate.locate.neurons.intervene import intervene, random_control
    from kelocate.locate.neurons.specificity import SAME_RELATION, UNRELATED, specificity_control

    effect = intervene(hooked, res.neurons, prompts, res.answer, factor, all_positions)
    ctl = spec = None
    if mode != "none" and res.neurons:
        ctl = random_control(hooked, res.neurons, prompts, res.answer, factor, draws, seed, all_positions)
    if mode == "same-relation" and chosen is not None and res.neurons:  # one group may be empty
        groups = {SAME_RELATION: chosen.same, UNRELATED: chosen.unrelated}
        main = (effect.after[0] - effect.before[0]) / effect.before[0] if effect.before[0] > 0 else 0.0
        spec = specificity_control(hooked, res.neurons, {k: v for k, v in groups.items() if v}, factor,
                                   all_positions, main, chosen.relation, chosen.sources).to_dict()
    return {"action": "suppress" if factor == 0.0 else "enhance",
            "positions": "all" if all_positions else "last prompt", "control": mode, **effect.to_dict(),
            "random_control": ctl, "specificity": spec}


# ====================================================================== tables


def _change(before: float, after: float) -> str:
    return f"{(after - before) / before * 100:+.1f}%" if before > 0 else "n/a"


def _pct(value: float | None) -> str:
    return f"{value * 100:+.1f}%" if value is not None else "-"


def _print(res, model_name: str, show: int) -> None:
    """Tables: the neurons, then the intervention and its controls."""
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
    if iv.get("random_control") or iv.get("specificity"):
        _print_controls(res, iv, verb)


def _print_controls(res, iv: dict, verb: str) -> None:
    """One table of mean p before/after: the fact, random neurons, same-relation and unrelated facts."""
    t = Table(title=f"controls, {verb}: mean p(answer)", title_justify="left")
    for col in ("neurons", "on", "facts", "before", "after", "change", "log-odds"):
        t.add_column(col, justify="left" if col in ("neurons", "on") else "right")
    before = sum(iv["before"]) / len(iv["before"])
    after = sum(iv["after"]) / len(iv["after"])
    t.add_row("found", "this fact", str(len(iv["before"])), f"{before:.4f}", f"{after:.4f}",
              _pct(iv["mean_relative_change"]), f"{iv['mean_logodds_change']:+.3f}")
    ctl = iv.get("random_control")
    if ctl:
        t.add_row("random", "this fact", str(len(iv["before"])), f"{before:.4f}", f"{ctl['mean_after']:.4f}",
                  _pct(ctl["mean_relative_change"]), f"{ctl['mean_logodds_change']:+.3f}")
    spec = iv.get("specificity")
    groups = spec["groups"] if spec else {}
    for name, g in groups.items():
        t.add_row("found", name.replace("_", " "), str(g["n"]), f"{g['mean_before']:.4f}", f"{g['mean_after']:.4f}",
                  _pct(g["mean_relative_change"]), f"{g['mean_logodds_change']:+.3f}")
    console.print(t)
    if ctl:
        console.print(f"random: {len(res.neurons)} random neurons in the same layers, {ctl['draws']} draws "
                      f"(seed {ctl['seed']}); change from {_pct(ctl['min_relative_change'])} to "
                      f"{_pct(ctl['max_relative_change'])}", highlight=False)
    if not spec:
        return
    for name, g in groups.items():
        _print_group(name, g, spec["relation"], verb)
    console.print(f"[bold]specificity:[/] {spec['verdict']}", highlight=False)


def _print_group(name: str, group: dict, relation: str | None, verb: str) -> None:
    """The control facts of one group, one row each."""
    what = (f"other '{relation}' facts (same relation)" if name == "same_relation" and relation else
            f"{name.replace('_', ' ')} facts")
    t = Table(title=f"{what}, {verb} the found neurons", title_justify="left")
    for col in ("prompt", "answer", "before", "after", "change", "log-odds"):
        t.add_column(col, justify="left" if col in ("prompt", "answer") else "right")
    for r in group["facts"]:
        t.add_row(r["prompt"], r["answer"], f"{r['before']:.4f}", f"{r['after']:.4f}", _pct(r["relative_change"]),
                  f"{r['logodds_change']:+.3f}")
    console.print(t)
