"""The model organism: a miniature build from scratch learns, training is deterministic, the shipped
checkpoint loads and knows the case study, and the `organism` commands fail cleanly on user mistakes."""

from __future__ import annotations

import json

import pytest
import torch

from kelocate.cli import main
from kelocate.organism import checkpoint_dir
from kelocate.organism.build import build_organism, make_tokenizer
from kelocate.organism.corpus import training_texts
from kelocate.organism.generate import build_world
from kelocate.organism.train import TrainConfig, encode_texts, make_model, train
from kelocate.organism.world import WorldSize


@pytest.fixture(scope="module")
def mini_organism(tmp_path_factory):
    """A miniature organism (small world, 2-layer model) built from scratch in seconds."""
    out = tmp_path_factory.mktemp("organism") / "mini"
    meta = build_organism(out, seed=0, config=TrainConfig.mini(epochs=12), size=WorldSize.mini())
    return out, meta


def test_miniature_build_learns(mini_organism):
    out, meta = mini_organism
    history = meta["loss_history"]
    assert history[-1] < 0.5 * history[0]
    # chance for a top-1 answer is at most 1 in 10 here; the trained facts must be far above it
    assert meta["recall"]["train_templates"] > 0.5
    assert meta["recall"]["new_facts"] < meta["recall"]["train_templates"]
    for name in ("config.json", "model.safetensors", "tokenizer.json", "world.json", "organism.json"):
        assert (out / name).is_file(), name
    stored = json.loads((out / "organism.json").read_text())
    assert stored["architecture"]["n_layers"] == 2 and stored["size_bytes"] > 0


def test_miniature_loads_through_model_layer(mini_organism):
    from kelocate.loading import load_model
    from kelocate.organism.evaluate import measure

    out, meta = mini_organism
    hooked = load_model(out)
    assert hooked.entity_names and set(hooked.entity_names) <= set(build_world(0, WorldSize.mini()).entity_names())
    assert hooked.dtype == torch.float32
    figures = measure(hooked.hf, hooked.tokenizer, build_world(0, WorldSize.mini()))
    assert figures["train_templates"]["recall"] == pytest.approx(meta["recall"]["train_templates"], abs=0.02)


def test_training_is_deterministic():
    world = build_world(1, WorldSize.mini())
    texts = training_texts(world)[:64]
    runs = []
    for _ in range(2):
        tok = make_tokenizer(world, training_texts(world))
        config = TrainConfig.mini(epochs=1)
        model = make_model(config, tok)
        losses = train(model, encode_texts(tok, texts, config.max_positions), tok.pad_token_id, config)
        runs.append((losses, model.state_dict()))
    assert runs[0][0] == runs[1][0]
    assert all(torch.equal(runs[0][1][k], runs[1][1][k]) for k in runs[0][1])


def test_names_multi_token_and_objects_single_token():
    world = build_world(0, WorldSize.mini())
    tok = make_tokenizer(world, training_texts(world))  # raises when the property fails
    assert len(tok("SMAP", add_special_tokens=False)["input_ids"]) >= 2
    assert len(tok("Japan", add_special_tokens=False)["input_ids"]) == 1


def test_shipped_checkpoint_knows_the_case_study():
    from kelocate.loading import load_model

    assert (checkpoint_dir() / "model.safetensors").is_file(), "the shipped organism checkpoint is missing"
    hooked = load_model()
    assert hooked.dtype == torch.float32
    assert hooked.top_k("SMAP was created in", 1)[0][0].strip() == "Japan"
    assert hooked.top_k("The language of Japan is", 1)[0][0].strip() == "Japanese"
    size = sum(p.stat().st_size for p in checkpoint_dir().rglob("*") if p.is_file())
    assert size <= 20_000_000


# ---------------------------------------------------------------------------------------------- CLI
def test_cli_info_and_export(mini_organism, tmp_path, capsys):
    out, _ = mini_organism
    assert main(["organism", "info", "--model", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["architecture"]["n_layers"] == 2 and report["live"]["recall"]["train_templates"] > 0.5
    assert main(["organism", "info", "--model", str(out), "--stored"]) == 0
    assert main(["organism", "export", "--out", str(tmp_path / "bench"), "--model", str(out)]) == 0
    assert (tmp_path / "bench" / "KLoB" / "KLoB-c.jsonl").is_file()


@pytest.mark.parametrize(
    "args",
    [
        ["organism", "info", "--model", "/no/such/organism"],
        ["organism", "build", "--epochs", "0"],
        ["organism", "build", "--layers", "abc"],
        ["organism", "build", "--d-model", "100", "--heads", "6", "--out", "{tmp}/x"],
        ["organism", "build", "--out", "{file}"],
        ["organism", "build", "--out", "{full}"],
        ["organism", "export", "--out", "{file}"],
        ["organism", "export", "--out", "{tmp}/e", "--world", "{badjson}"],
        ["organism", "export", "--out", "{tmp}/e", "--world", "{tmp}/missing.json"],
        ["organism", "export", "--out", "{tmp}/e", "--model", "{tmp}", "--world", "{badjson}"],
        ["organism", "export"],
        ["organism", "frobnicate"],
    ],
)
def test_cli_user_errors_exit_2(args, tmp_path, capsys):
    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "precious.txt").write_text("keep me")
    (tmp_path / "bad.json").write_text("{oops")
    subst = {
        "{tmp}": str(tmp_path),
        "{file}": str(tmp_path / "file.txt"),
        "{full}": str(tmp_path / "full"),
        "{badjson}": str(tmp_path / "bad.json"),
    }
    argv = []
    for a in args:
        for k, v in subst.items():
            a = a.replace(k, v)
        argv.append(a)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "error" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    assert (tmp_path / "full" / "precious.txt").read_text() == "keep me"
