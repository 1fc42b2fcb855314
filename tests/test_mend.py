"""MEND on a miniature configuration: training lowers its losses, a trained hypernetwork's edits raise
p(target) and revert bit-exactly, a run killed with SIGKILL resumes from its last checkpoint and ends where
an uninterrupted run ends, and a missing or foreign checkpoint is one line of error."""

from __future__ import annotations

import json

import pytest
import torch
from training_helpers import assert_resumes_like_a_straight_run

from kelocate.cli import main
from kelocate.edit import EditRequest, editor
from kelocate.edit.methods.mend import MENDConfig, TrainingEdit, factors, train
from kelocate.errors import KelocateError
from kelocate.model import weights

SUBJECTS = ["SMAP", "Paris", "Berlin", "the river", "the team", "Japan"]
TARGETS = ["France", "Germany", "Japan", "music", "city", "river"]


def edits() -> list[TrainingEdit]:
    out = []
    for i, s in enumerate(SUBJECTS):
        request = EditRequest(f"{s} was created in", s, TARGETS[i], paraphrases=(f"{s} is located in",))
        out.append(TrainingEdit(request, (f"the capital of {SUBJECTS[i - 1]} is",)))
    return out


def mini(steps: int = 12) -> MENDConfig:
    return MENDConfig(layers=[1, 2], rank=8, lr_init=1e-2, lr=1e-2, steps=steps, batch_size=2, save_every=4)


def test_factors_are_the_gradient_of_the_edit_loss(tiny_model):
    """sum_t delta_t u_t^T equals autograd's gradient of the same loss w.r.t. down_proj (a direct computation)."""
    from kelocate.edit.losses import masked_target_loss, prompt_target_batch
    from kelocate.model.scoring import forward_with_grad, grad_on

    request = edits()[0].request
    (u, delta), = factors(tiny_model, [request], [1]).values()
    batch = prompt_target_batch(tiny_model, [request])
    with grad_on(tiny_model, [weights.mlp_out_name(1)]) as (param,):
        loss = masked_target_loss(forward_with_grad(tiny_model, batch["ids"], batch["mask"]), batch["ids"],
                                  batch["target_mask"])
        (grad,) = torch.autograd.grad(loss, [param])
    torch.testing.assert_close(delta.T @ u, grad, rtol=1e-4, atol=1e-6 * (1 + float(grad.abs().max())))


def test_training_lowers_the_losses_and_edits_revert_exactly(tmp_path):
    """On the organism (a random tiny model has nothing to learn from): 40 steps of 4 edits."""
    from kelocate.loading import load_model
    from kelocate.organism import world_file
    from kelocate.organism.datasets import organism_training_edits
    from kelocate.organism.world import load_world

    organism = load_model()
    data = organism_training_edits(organism, load_world(world_file(organism.path)), 40, held_out=0)
    config = MENDConfig(layers=[3, 4, 5], rank=16, lr_init=1e-2, lr=1e-3, steps=40, batch_size=4, save_every=20)
    summary = train(organism, data, tmp_path / "mend", config)
    log = [json.loads(line) for line in (tmp_path / "mend" / "losses.jsonl").read_text().splitlines()]
    assert [row["step"] for row in log] == list(range(1, 41)) and summary["last"]["step"] == 40
    first, last = sum(r["loss"] for r in log[:8]) / 8, sum(r["loss"] for r in log[-8:]) / 8
    assert last < 0.7 * first, (first, last)
    original = weights.state_hash(organism)
    mend = editor("mend", trained=tmp_path / "mend")
    gains = []  # log p(target) after the edit - before it, per edit (each reverted before the next)
    for item in data[:8]:
        request = item.request
        before = organism.answer_logprob(request.prompt, request.target_new)
        record = mend.apply(organism, request)
        assert record.layers == [3, 4, 5] and record.changed_elements() > 0
        gains.append(organism.answer_logprob(request.prompt, request.target_new) - before)
        record.revert()
        assert weights.state_hash(organism) == original
        assert organism.answer_logprob(request.prompt, request.target_new) == before
    # the edits make their new targets far more likely (measured: +5.9 nats on average, 7 of 8 up)
    assert sum(gains) / len(gains) > 2.0 and sum(g > 0 for g in gains) >= 6, gains


def test_a_killed_training_resumes_from_its_last_checkpoint(tiny_model_dir, tmp_path):
    assert_resumes_like_a_straight_run(train, tiny_model_dir, tmp_path, edits, mini, "mend.json")


def test_missing_or_foreign_checkpoints_are_one_line(tiny_model, tiny_model_dir, tmp_path, capsys):
    train(tiny_model, edits(), tmp_path / "tiny", mini(4))
    argv = ["edit", "SMAP was created in", "--subject", "SMAP", "--target", "France", "--method", "mend"]
    assert main([*argv, "--trained", str(tmp_path / "missing")]) == 2
    assert main([*argv, "--trained", str(tmp_path)]) == 2  # a folder without a checkpoint
    assert main([*argv, "--trained", str(tmp_path / "tiny")]) == 2  # trained for the tiny model, not the organism
    assert main([*argv]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    text = " ".join(lines)
    assert "is not a folder" in text and "holds no MEND checkpoint" in text and "trained for model" in text
    assert "needs --trained" in text and "Traceback" not in text
    (tmp_path / "tiny" / "mend.safetensors").write_bytes(b"garbage")
    with pytest.raises(KelocateError, match="not a usable MEND checkpoint"):
        editor("mend", trained=tmp_path / "tiny").apply(tiny_model, edits()[0].request)


def test_training_data_can_be_a_knowedit_file(tmp_path):
    from kelocate.edit.training import read_training_edits

    path = tmp_path / "zsre.json"
    path.write_text(json.dumps([{"subject": "SMAP", "prompt": "SMAP was created in", "target_new": "France",
                                 "ground_truth": ["Japan"], "rephrase_prompt": "SMAP originated in",
                                 "locality": {"Relation_Specificity": [{"prompt": "SMAP is a", "ground_truth": [
                                     ["group", "band"]]}]}}]))
    (edit,) = read_training_edits(path)
    assert edit.request.target_new == "France" and edit.request.ground_truth == "Japan"
    assert edit.request.paraphrases == ("SMAP originated in",) and edit.neighbours == (("SMAP is a", "group"),)
