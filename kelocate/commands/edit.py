"""`kelocate edit`: edit a fact where it was located, show before -> after, save, apply or revert records.

Three uses:
- `kelocate edit PROMPT --subject S --target T [--method rome] [--layers auto|5|4-8]`: edit, print the
  layers (and where they came from), then the answer and p(target) before -> after on the prompt, a
  paraphrase, the subject's other facts and other subjects' facts; `--save FILE` writes the record.
- `kelocate edit --apply FILE --save-model DIR [--model M]`: write an edited copy of the model.
- `kelocate edit --revert FILE --model DIR`: undo that edit in the copy (bit-exact), in place.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import typer
from rich.table import Table

from kelocate.commands.common import SEPARATOR, console, err_console, load, parse_fact, parse_layers, user_errors
from kelocate.edit import registry
from kelocate.errors import KelocateError

EDITS_LOG = "kelocate_edits.json"  # in an edited copy: the unedited model's fingerprint and the applied records


def parse_edit_layers(spec: str | None) -> str | list[int] | None:
    """'auto', '5', '4-8' or '1,3' -> 'auto' or layer numbers (None: the method's configured layers)."""
    if spec is None:
        return None
    if spec.strip().lower() == "auto":
        return "auto"
    layers = parse_layers(spec)
    if layers is None:
        raise KelocateError("--layers all is not an edit location; pass auto, a layer (5) or a range (4-8)")
    return layers


def parse_neurons(spec: str) -> list[tuple[int, int]]:
    """'3:120,4:7' -> [(3, 120), (4, 7)]."""
    out = []
    for part in spec.split(","):
        layer, colon, index = part.strip().partition(":")
        try:
            out.append((int(layer), int(index)))
        except ValueError:
            raise KelocateError(f"--neurons {spec!r} is not a neuron list; write LAYER:INDEX pairs, e.g. 3:120,4:7") \
                from None
        if not colon:
            raise KelocateError(f"--neurons {spec!r} is not a neuron list; write LAYER:INDEX pairs, e.g. 3:120,4:7")
    return out


def probes(model, prompt: str, subject: str, paraphrases: list[str], neighbours: list[str],
           unrelated: list[str]) -> list[tuple[str, str]]:
    """(label, prompt) rows of the before -> after table: given ones, else the organism's own facts."""
    rows = [("prompt", prompt)] + [("paraphrase", p) for p in paraphrases]
    rows += [("same subject", parse_fact(f, "--neighbour")[0]) for f in neighbours]
    rows += [("other subject", parse_fact(f, "--unrelated")[0]) for f in unrelated]
    if model.provenance.is_organism and model.path is not None:
        from kelocate.organism.datasets import organism_probes, organism_world

        world = organism_world(model, "pass --paraphrase, --neighbour and --unrelated")
        found = organism_probes(world, prompt, subject)
        wanted = (("paraphrase", "paraphrase", paraphrases), ("same subject", "same subject", neighbours),
                  ("other subject", "other subjects", unrelated))
        for label, key, given in wanted:
            if not given:
                rows += [(label, p) for p, _ in found[key]]
    elif not paraphrases:  # CounterFact's way: the prompt after a short text the model generated itself
        from kelocate.edit.keys import context_templates

        prefixed = context_templates(model, [[8, 1]], ["The"], seed=1)[1]
        rows.append(("prefixed prompt", prefixed.format(prompt)))
    return rows


def snapshot_answers(model, rows: list[tuple[str, str]], target: str) -> list[tuple[str, float, float]]:
    """Per probe: the top next token, its probability, and p(target) (all target tokens)."""
    out = []
    for _, text in rows:
        token, prob = model.top_k(text, 1)[0]
        out.append((token.strip() or repr(token), prob, model.answer_prob(text, target)))
    return out


def report(rows, before, after, target: str) -> Table:
    table = Table(title=f"before -> after (target {target!r})")
    for column in ("probe", "prompt", "answer before", f"p({target}) before", "answer after", f"p({target}) after"):
        table.add_column(column, overflow="fold")
    for (label, text), (a0, p0, t0), (a1, p1, t1) in zip(rows, before, after, strict=True):
        table.add_row(label, text, f"{a0} ({p0:.3f})", f"{t0:.3f}", f"{a1} ({p1:.3f})", f"{t1:.3f}")
    return table


def served_line(record) -> str:
    """Where an edit that writes no weight went: its method's label and what it serves (the registry's
    `serves`), with the served text or the memory's size where the record holds them."""
    entry = registry.method(record.method)
    line = f"{entry.label} edit, no weight changed: served from {entry.serves}"
    if "context" in record.extra:  # the in-context editors' text
        line += f": {record.extra['context']!r} goes before every prompt"
    if "memory_size" in record.extra:  # an edit memory's size after this edit
        line += f" ({record.extra['memory_size']} stored)"
    return line


def where_line(record) -> str:
    if record.serving is not None:
        return served_line(record)
    origin = record.layer_origin
    what = f"neurons {', '.join(f'{a}:{b}' for a, b in record.neurons)}" if record.neurons else \
        f"layers {', '.join(map(str, record.layers))}"
    source = origin.get("source")
    if source == "trace":
        best = max(origin["effects"][layer] for layer in record.layers)
        return (f"located {what}: {origin['kind']} ({origin['window']}) at token {origin['token_label']!r}, "
                f"largest effect +{best:.3f} (clean {origin['clean_score']:.3f}, corrupted "
                f"{origin['corrupted_score']:.3f})")
    if source == "config":
        return f"{what} (from the {origin['profile']} profile's defaults; --layers auto locates them)"
    if source == "mend hypernetwork":
        return f"{what} (the MEND hypernetwork's layers)"
    if source == "knowledge neurons":
        return f"located {what} by integrated gradients of {origin['answer']!r} over {len(origin['prompts'])} prompts"
    return f"{what} (given)"


# ---------------------------------------------------------------------- edited copies
def _log_of(folder: Path) -> dict:
    """The edit log of an edited copy ({} for a model that is not one)."""
    path = folder / EDITS_LOG
    if not path.is_file():
        return {}
    try:
        log = json.loads(path.read_text())
        if not isinstance(log.get("base_fingerprint"), str) or not isinstance(log.get("records"), list):
            raise ValueError("fields missing")
    except (ValueError, AttributeError) as exc:
        raise KelocateError(f"{path} is damaged ({exc}); the folder's edit history is unknown: start again from "
                            "the original model") from None
    return log


def check_destination(out: Path, model) -> None:
    """--save-model writes a new folder, or replaces an edited copy; never the source or another folder."""
    if model.path is not None and out.resolve() == Path(model.path).resolve():
        raise KelocateError(f"--save-model {out} is the model's own folder; write the edited copy elsewhere")
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / EDITS_LOG).is_file())):
        raise KelocateError(f"--save-model {out} exists and is not an edited copy; pass a new folder (kelocate "
                            "replaces only folders it wrote)")


def save_copy(model, dest: Path, log: dict) -> Path:
    """Write the (edited) model, its tokenizer, the organism world if any and the edit log, atomically."""
    from kelocate.atomic import atomic_dir
    from kelocate.model.twin import save_model

    with atomic_dir(dest, fix="pass --save-model with a writable folder") as tmp:
        save_model(model, tmp)
        if model.path is not None and model.path.is_dir():
            for extra in ("world.json", "organism.json"):
                if (model.path / extra).is_file():
                    shutil.copy2(model.path / extra, tmp / extra)
        # kept after the last revert too: the copy's own fingerprint differs from the original's (a hub
        # revision or GGUF file is not part of a saved folder), and records name the original's
        (tmp / EDITS_LOG).write_text(json.dumps(log, indent=2))
    return dest


def apply_record(record_file: Path, model_source: str | None, out: Path) -> None:
    from kelocate.edit import EditRecord

    record = EditRecord.load(record_file)
    if record.serving is not None:
        raise KelocateError(f"this {record.method} edit changes no weights (it is served from "
                            f"{registry.method(record.method).serves}), so there is "
                            "no edited copy to save; apply it in Python with EditRecord.load(FILE).apply_to(model)")
    model = load(model_source)
    check_destination(out, model)
    log = _log_of(model.path) if model.path is not None and model.path.is_dir() else {}
    base = log.get("base_fingerprint", model.fingerprint)
    record.apply_to(model, base_fingerprint=base)
    log = {"base_fingerprint": base, "records": [*log.get("records", []), record.digest]}
    save_copy(model, out, log)
    console.print(f"applied the {record.method} edit {record.digest} ({len(record.names)} parameters); "
                  f"edited copy written to {out}")


def revert_record(record_file: Path, model_source: str | None) -> None:
    from kelocate.edit import EditRecord

    if model_source is None:
        raise KelocateError("--revert needs --model DIR, the edited copy written by --apply ... --save-model DIR")
    record = EditRecord.load(record_file)
    folder = Path(model_source)
    log = _log_of(folder) if folder.is_dir() else {}
    if not log:
        raise KelocateError(f"{model_source} is not an edited copy (no {EDITS_LOG}); pass the folder written by "
                            "`kelocate edit --apply FILE --save-model DIR`")
    if not log["records"]:
        raise KelocateError(f"{model_source} has no edits left to revert (every applied edit was reverted)")
    if log["records"][-1] != record.digest:
        where = "is not in it" if record.digest not in log["records"] else "is not the last applied"
        raise KelocateError(f"this edit ({record.digest}) {where}; revert the edits of {folder} in reverse order "
                            f"(last applied: {log['records'][-1]})")
    model = load(str(folder))
    record.revert(model, base_fingerprint=log["base_fingerprint"])
    save_copy(model, folder, {"base_fingerprint": log["base_fingerprint"], "records": log["records"][:-1]})
    console.print(f"reverted the {record.method} edit {record.digest} in {folder}: those weights are bit-identical "
                  "to before it")


# ---------------------------------------------------------------------- the command
def labels(which: Callable[[registry.Method], bool] = lambda m: True, sep: str = " / ") -> str:
    """The registry's labels of the methods `which` picks, in its order, for help texts ('MEND / SERAC')."""
    return sep.join(m.label for m in registry.METHODS.values() if which(m))


def register(app: typer.Typer) -> None:
    @app.command(help=f"Edit a fact ({labels(sep=', ')}) and show before -> after.")
    @user_errors
    def edit(
        prompt: str = typer.Argument(None, help="A prompt of the fact, containing the subject."),
        subject: str = typer.Option(None, "--subject", "-s", help="The subject as written in the prompt."),
        target: str = typer.Option(None, "--target", "-t", help="The new answer."),
        method: str = typer.Option("rome", "--method", "-m", help=f"One of {', '.join(registry.METHODS)}."),
        layers: str = typer.Option(None, "--layers", "-l", help="auto (locate by causal tracing), a layer (5) "
                                   "or a range (4-8); default: the method's profile defaults."),
        neurons: str = typer.Option(None, "--neurons", help="KN: LAYER:INDEX pairs (default: located)."),
        ground_truth: str = typer.Option(None, "--ground-truth", help="The old answer (default: the model's)."),
        paraphrase: list[str] = typer.Option(None, "--paraphrase", "-p", help="A paraphrase to report (repeat)."),
        neighbour: list[str] = typer.Option(None, "--neighbour", help=f"Another fact of the subject, "
                                            f"PROMPT{SEPARATOR}ANSWER (repeat), reported as locality."),
        unrelated: list[str] = typer.Option(None, "--unrelated", help=f"A fact of another subject, "
                                            f"PROMPT{SEPARATOR}ANSWER (repeat), reported as locality."),
        model_name: str = typer.Option(None, "--model", help="Model: a folder, .gguf, fetched name or owner/name "
                                       "(default: the organism)."),
        config: Path = typer.Option(None, "--config", help="A TOML file of hyper-parameters ([method] table)."),
        corpus: Path = typer.Option(None, "--corpus", help="Text for the key statistics (txt or jsonl)."),
        save: Path = typer.Option(None, "--save", help="Write the edit record to this .safetensors file."),
        apply: Path = typer.Option(None, "--apply", help="Apply a saved record (with --save-model DIR)."),
        save_model: Path = typer.Option(None, "--save-model", help="With --apply: write the edited copy here."),
        revert: Path = typer.Option(None, "--revert", help="Undo a saved record in the edited copy --model DIR."),
        trained: Path = typer.Option(None, "--trained", help=f"{labels(lambda m: m.needs_trained)}: the "
                                     "folder `kelocate train METHOD` wrote."),
        pool: Path = typer.Option(None, "--pool", help=f"{labels(lambda m: m.needs_pool)}: edits to retrieve "
                                  "demonstrations from (JSON/JSONL of prompt, subject, target_new, paraphrases)."),
        as_json: bool = typer.Option(False, "--json", help="Print the record's metadata as JSON."),
    ) -> None:
        if apply is not None or revert is not None:
            if apply is not None and revert is not None:
                raise KelocateError("pass either --apply or --revert, not both")
            if prompt is not None:
                raise KelocateError("--apply and --revert take no prompt; drop it")
            if apply is not None:
                if save_model is None:
                    raise KelocateError("--apply needs --save-model DIR (where the edited copy goes)")
                return apply_record(apply, model_name, save_model)
            return revert_record(revert, model_name)
        if save_model is not None:
            raise KelocateError("--save-model goes with --apply FILE; to keep this edit, pass --save FILE")
        if prompt is None or subject is None or target is None:
            raise KelocateError("an edit needs PROMPT, --subject and --target, e.g. kelocate edit 'SMAP was "
                                "created in' --subject SMAP --target France")
        spec = registry.method(method)  # one line of error for an unknown method
        if save is not None and save.suffix != ".safetensors":
            raise KelocateError(f"edit records are saved as .safetensors files, got {str(save)!r}")
        if neurons is not None and spec.locate != "neurons":
            raise KelocateError("--neurons is for --method kn; other methods take --layers")
        if corpus is not None and not spec.uses_corpus:
            raise KelocateError(f"--corpus is for the editors that use key statistics "
                                f"({', '.join(registry.CORPUS_METHODS)}), not {method}")
        if corpus is not None and not corpus.is_file():
            raise KelocateError(f"--corpus {str(corpus)!r} does not exist; pass a text or JSONL file")
        if config is not None and not config.is_file():
            raise KelocateError(f"--config {str(config)!r} does not exist; pass a TOML file")
        if spec.needs_trained and trained is None:
            raise KelocateError(f"--method {spec.name} needs --trained DIR (see `kelocate train {spec.name}`)")
        if not spec.needs_trained and trained is not None:
            raise KelocateError(f"--trained goes with --method {' or '.join(registry.TRAINABLE)} only")
        if trained is not None and not trained.is_dir():
            raise KelocateError(f"--trained {str(trained)!r} is not a folder; pass the --out of `kelocate train "
                                f"{spec.name}`")
        if (pool is not None) != spec.needs_pool:
            pooled = " or ".join(name for name, m in registry.METHODS.items() if m.needs_pool)
            raise KelocateError(f"--method {pooled} needs --pool FILE (edits to draw demonstrations from), and "
                                f"--pool goes with --method {pooled} only")
        demonstrations = None
        if pool is not None:
            from kelocate.edit.training import read_training_edits

            demonstrations = [e.request for e in read_training_edits(pool, "--pool")]
        layer_spec = parse_edit_layers(layers)
        neuron_list = parse_neurons(neurons) if neurons else None
        from kelocate.edit import EditRequest, editor
        from kelocate.locate_then_edit import locate_and_edit

        model = load(model_name)
        request = EditRequest(prompt, subject, target, ground_truth=ground_truth,
                              paraphrases=tuple(paraphrase or ()))
        model.subject_span(prompt, subject)
        rows = probes(model, prompt, subject, list(paraphrase or ()), list(neighbour or ()), list(unrelated or ()))
        settings = {"config_file": config}
        if spec.uses_corpus and corpus is not None:
            settings["corpus"] = corpus
        if trained is not None:
            settings[registry.TRAINED] = trained
        if demonstrations is not None:
            settings[registry.POOL] = demonstrations
        chosen = editor(method, **settings)
        before = snapshot_answers(model, rows, target)
        with err_console.status(f"editing with {method} ..."):
            if neuron_list is not None:
                record = chosen.apply(model, request, neurons=neuron_list)
            else:
                record = locate_and_edit(model, chosen, request, layers=layer_spec)
        console.print(where_line(record), highlight=False)
        after = snapshot_answers(model, rows, target)
        console.print(report(rows, before, after, target))
        for note in record.notes:
            console.print(f"note: {note}", highlight=False)
        console.print(f"edit took {record.timings['edit_s']:.2f} s; {record.changed_elements()} weights changed",
                      highlight=False)
        if save is not None:
            record.save(save)
            console.print(f"record written to {save} (revert: kelocate edit --revert; apply: --apply)")
        if as_json:
            console.print_json(json.dumps(record.metadata()))
