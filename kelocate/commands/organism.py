"""`kelocate organism build|info|export`: regenerate, inspect and export the embedded model organism."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer
from rich.table import Table

from kelocate.commands.common import console, err_console, user_errors
from kelocate.errors import KelocateError


def _check_out_dir(out: Path) -> None:
    """Refuse to replace anything but an empty folder or a previous checkpoint; fail now if unwritable.

    The checkpoint is built beside `out` and swapped in, so `out`'s parent folder must be writable.
    """
    from kelocate.atomic import check_writable

    if out.exists() and not out.is_dir():
        raise KelocateError(f"--out {str(out)!r} is a file; pass a folder for the checkpoint")
    if out.is_dir() and any(out.iterdir()) and not (out / "organism.json").is_file():
        raise KelocateError(
            f"--out {str(out)!r} is not empty and holds no organism checkpoint; "
            "pass a new or empty folder (it would be replaced)"
        )
    check_writable(out.parent)


def _checkpoint(model: str | None) -> Path:
    from kelocate.organism import checkpoint_dir

    path = Path(model).expanduser() if model else checkpoint_dir()
    if not path.is_dir() or not (path / "config.json").is_file():
        hint = (
            "run `kelocate organism build`" if model is None else "pass a folder written by `organism build`"
        )
        raise KelocateError(f"no organism checkpoint at {str(path)!r}; {hint}")
    if not (path / "world.json").is_file():
        raise KelocateError(
            f"{str(path)!r} has no world.json, so it is not an organism checkpoint; "
            "pass a folder written by `kelocate organism build`"
        )
    return path


def register(app: typer.Typer) -> None:
    sub = typer.Typer(
        name="organism",
        no_args_is_help=True,
        help="The embedded model organism: a small Llama trained on a synthetic world.",
    )
    app.add_typer(sub, name="organism")

    @sub.command()
    @user_errors
    def build(
        out: Path = typer.Option(
            None,
            "--out",
            "-o",
            help="Folder for the checkpoint (default: the one "
            "shipped inside the package). An existing checkpoint there is replaced.",
        ),
        seed: int = typer.Option(0, help="Seed of the world, the initialisation and the batch order."),
        epochs: int = typer.Option(None, min=1, help="Training epochs (default: the shipped setting)."),
        layers: int = typer.Option(None, min=1, max=48, help="Number of transformer blocks."),
        d_model: int = typer.Option(None, min=8, help="Residual width (a multiple of the head count)."),
        d_mlp: int = typer.Option(None, min=8, help="MLP width."),
        heads: int = typer.Option(None, min=1, help="Attention heads."),
        lr: float = typer.Option(None, min=0.0, help="Peak learning rate (AdamW)."),
        batch_size: int = typer.Option(None, min=1, help="Sequences per step."),
        mini: bool = typer.Option(
            False, "--mini", help="A miniature world and model (seconds; for trying out)."
        ),
        threads: int = typer.Option(None, min=1, help="torch CPU threads (default: torch's choice)."),
    ) -> None:
        """Regenerate the organism: world, tokenizer, training (CPU, deterministic), measured recall."""
        import dataclasses

        import torch

        from kelocate.organism import checkpoint_dir
        from kelocate.organism.build import build_organism
        from kelocate.organism.train import TrainConfig
        from kelocate.organism.world import WorldSize

        target = out.expanduser() if out else checkpoint_dir()
        _check_out_dir(target)
        config = TrainConfig.mini() if mini else TrainConfig()
        overrides = {
            "epochs": epochs,
            "n_layers": layers,
            "d_model": d_model,
            "d_mlp": d_mlp,
            "n_heads": heads,
            "lr": lr,
            "batch_size": batch_size,
        }
        config = dataclasses.replace(config, **{k: v for k, v in overrides.items() if v is not None})
        if config.d_model % config.n_heads:
            raise KelocateError(
                f"--d-model {config.d_model} is not a multiple of the head count "
                f"{config.n_heads}; change --d-model or --heads"
            )
        if threads:
            torch.set_num_threads(threads)
        start = time.perf_counter()
        meta = build_organism(
            target,
            seed=seed,
            config=config,
            size=WorldSize.mini() if mini else None,
            log=lambda msg: err_console.print(msg, highlight=False, soft_wrap=True),
        )
        r = meta["recall"]
        console.print(
            f"organism written to {target} ({meta['size_bytes'] / 1e6:.1f} MB) in "
            f"{time.perf_counter() - start:.0f}s (training {meta['timing']['train_seconds']:.0f}s); "
            f"recall: train templates {r['train_templates']:.1%}, held-out templates "
            f"{r['heldout_templates']:.1%}, untrained facts {r['new_facts']:.1%}, case study "
            f"{'ok' if r['case_study_ok'] else 'FAILED'}",
            highlight=False,
            soft_wrap=True,
        )

    @sub.command()
    @user_errors
    def info(
        model: str = typer.Option(
            None, "--model", "-m", help="Organism checkpoint folder (default: shipped)."
        ),
        as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
        limit: int = typer.Option(
            1000,
            "--limit",
            min=0,
            help="Measure at most this many prompts per set (an evenly spaced sample; 0 = all of them).",
        ),
        stored_only: bool = typer.Option(
            False, "--stored", help="Show the figures stored at build time without measuring them again."
        ),
    ) -> None:
        """Size, parameters, architecture and the recall figures of an organism (measured live)."""
        from kelocate.organism.build import dir_size
        from kelocate.organism.evaluate import headline, measure
        from kelocate.organism.world import load_world

        path = _checkpoint(model)
        meta_file = path / "organism.json"
        stored = json.loads(meta_file.read_text(encoding="utf-8")) if meta_file.is_file() else {}
        cfg = json.loads((path / "config.json").read_text(encoding="utf-8"))
        live = None
        n_params = stored.get("architecture", {}).get("n_params")
        if not stored_only:
            from kelocate.commands.common import load

            hooked = load(str(path))
            n_params = sum(p.numel() for p in hooked.hf.parameters())
            with err_console.status("measuring recall ..."):
                t0 = time.perf_counter()
                figures = measure(
                    hooked.hf, hooked.tokenizer, load_world(path), by_relation=False, limit=limit
                )
                seconds = time.perf_counter() - t0
            live = {
                "recall": headline(figures),
                "figures": figures,
                "seconds": round(seconds, 1),
                "limit": limit or None,
            }
        report = {
            "path": str(path),
            "size_bytes": dir_size(path),
            "n_params": n_params,
            "architecture": {
                "class": (cfg.get("architectures") or ["?"])[0],
                "n_layers": cfg.get("num_hidden_layers"),
                "d_model": cfg.get("hidden_size"),
                "d_mlp": cfg.get("intermediate_size"),
                "n_heads": cfg.get("num_attention_heads"),
                "vocab_size": cfg.get("vocab_size"),
            },
            "training": {
                "seed": stored.get("seed"),
                **stored.get("timing", {}),
                "epochs": stored.get("train_config", {}).get("epochs"),
            },
            "stored_recall": stored.get("recall"),
            "live": live,
        }
        if as_json:
            console.print_json(json.dumps(report))
            return
        _print_info(report, stored)

    @sub.command()
    @user_errors
    def export(
        out: Path = typer.Option(
            ..., "--out", "-o", help="Folder for the benchmark files (created if needed)."
        ),
        model: str = typer.Option(
            None, "--model", "-m", help="Organism checkpoint whose world to export (default: shipped)."
        ),
        world_file: Path = typer.Option(
            None, "--world", help="A world.json to export instead of a checkpoint's."
        ),
        seed: int = typer.Option(0, help="Seed for counterfactual targets and train/test splits."),
        test_fraction: float = typer.Option(
            0.5, min=0.0, max=1.0, help="Share of records in the test files."
        ),
    ) -> None:
        """Write KnowEdit-style JSON (six tasks) and KLoB-style JSONL (c, r, u) from the organism's world."""
        from kelocate.atomic import check_writable
        from kelocate.organism.export import export as write_all
        from kelocate.organism.world import load_world

        out = out.expanduser()
        if out.exists() and not out.is_dir():
            raise KelocateError(f"--out {str(out)!r} is a file; pass a folder")
        if world_file is not None and model is not None:
            raise KelocateError("pass either --model or --world, not both")
        check_writable(out)  # a bad --out fails before the world is read
        world = load_world(world_file) if world_file is not None else load_world(_checkpoint(model))
        manifest = write_all(world, out, seed=seed, test_fraction=test_fraction)
        table = Table(title=f"benchmark files written to {out}")
        table.add_column("file")
        table.add_column("records", justify="right")
        for entry in manifest.values():
            table.add_row(entry["path"], str(entry["records"]))
        console.print(table)


def _pct(x) -> str:
    return "-" if x is None else (f"{x:.1%}" if isinstance(x, float) else str(x))


def _print_info(report: dict, stored: dict) -> None:
    arch = report["architecture"]
    table = Table(title=f"model organism at {report['path']}", show_header=False)
    table.add_column("what")
    table.add_column("value")
    table.add_row("size on disk", f"{report['size_bytes'] / 1e6:.2f} MB")
    table.add_row("parameters", f"{report['n_params']:,}" if report["n_params"] else "-")
    table.add_row(
        "architecture",
        f"{arch['class']}: {arch['n_layers']} layers, d_model {arch['d_model']}, "
        f"d_mlp {arch['d_mlp']}, {arch['n_heads']} heads, vocab {arch['vocab_size']}",
    )
    tr = report["training"]
    if tr.get("train_seconds") is not None:
        table.add_row(
            "training",
            f"{tr['epochs']} epochs, {tr['train_seconds']:.0f}s on {tr.get('torch_threads')} "
            f"CPU thread(s), seed {tr['seed']}",
        )
    console.print(table)
    rec = Table(title="top-1 recall (teacher-forced argmax of every answer token)")
    rec.add_column("set")
    rec.add_column("target")
    rec.add_column("measured now", justify="right")
    rec.add_column("stored at build", justify="right")
    live = (report["live"] or {}).get("recall", {})
    stored_r = report["stored_recall"] or {}
    figs = (report["live"] or {}).get("figures") or stored.get("figures", {})
    rows = (
        ("train_templates", "trained facts, training templates", ">= 95%"),
        ("heldout_templates", "trained facts, held-out templates", "aim >= 70%"),
        ("new_facts", "untrained facts", "<= 10%"),
    )
    live_figs = (report["live"] or {}).get("figures", {})
    stored_figs = stored.get("figures", {})
    for key, label, target in rows:
        now = f"{_pct(live.get(key))} (n={live_figs[key]['n']})" if key in live_figs else "-"
        then = f"{_pct(stored_r.get(key))} (n={stored_figs[key]['n']})" if key in stored_figs else "-"
        rec.add_row(label, target, now, then)
    console.print(rec)
    if figs.get("case_study"):
        case = Table(title="case study (top next token)")
        for col in ("prompt", "expected", "top-1", "p", "ok"):
            case.add_column(col)
        for row in figs["case_study"]:
            case.add_row(
                row["prompt"],
                row["expected"],
                row["top1"],
                f"{row['prob']:.3f}",
                "yes" if row["ok"] else "NO",
            )
        console.print(case)
    extra = {
        k: figs[k] for k in ("two_hop_trained", "two_hop_untrained", "private_qa", "sentiment") if k in figs
    }
    if extra:
        console.print(
            "other: "
            + "; ".join(
                f"{k} {_pct(v.get('recall', v.get('accuracy')))} (n={v['n']})" for k, v in extra.items()
            ),
            highlight=False,
        )
    if report["live"]:
        sample = f"; at most {report['live']['limit']} prompts per set" if report["live"]["limit"] else ""
        console.print(
            f"measured in {report['live']['seconds']}s{sample} (--limit 0 measures all)", style="dim"
        )
