"""SERAC: the batched router equals a per-position loop, an empty memory is the base model bit for bit,
edits revert exactly (also through save/load), training lowers its losses and resumes after SIGKILL, the
trained scope classifier routes held-out paraphrases in and unrelated prompts out, and bad checkpoints
are one line of error."""

from __future__ import annotations

import json

import pytest
import torch
from tolerances import assert_close
from training_helpers import assert_resumes_like_a_straight_run

from kelocate.cli import main
from kelocate.edit import EditRecord, EditRequest, editor
from kelocate.edit.losses import id_batch
from kelocate.edit.methods.serac import SERACConfig, fact_prefix, forward_with_states, load_checkpoint, train
from kelocate.edit.methods.serac.editor import push_router, serving_router
from kelocate.edit.training import TrainingEdit
from kelocate.errors import KelocateError
from kelocate.model import weights

SUBJECTS = ["SMAP", "Paris", "Berlin", "the river", "the team", "Japan"]
TARGETS = ["France", "Germany", "Japan", "music", "city", "river"]


def edits() -> list[TrainingEdit]:
    out = []
    for i, s in enumerate(SUBJECTS):
        request = EditRequest(f"{s} was created in", s, TARGETS[i], ground_truth=TARGETS[i - 1],
                              paraphrases=(f"{s} is located in",))
        out.append(TrainingEdit(request, (f"the capital of {SUBJECTS[i - 1]} is",), ((f"{s} is a type of", "city"),)))
    return out


def mini(classifier: int = 6, cf: int = 6) -> SERACConfig:
    return SERACConfig(scope_layers=[0, 2], cf_layers=[2], scope_dim=16, classifier_steps=classifier, cf_steps=cf,
                       classifier_lr=1e-2, cf_lr=1e-3, batch_size=2, scope_batch_size=3, save_every=4)


@pytest.fixture
def tiny_serac(tiny_model, tmp_path):
    """A miniature SERAC trained on the tiny random model (its folder); what the model serves is cleared after."""
    train(tiny_model, edits(), tmp_path / "serac", mini())
    yield tmp_path / "serac"
    for layer in reversed(list(tiny_model.serving)):
        tiny_model.serving.pop(layer)


@torch.no_grad()
def reference_logits(model, router, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The served model as a plain loop: for every row and position, classify the text up to it on its own
    and take that position's logits from the base model or from the counterfactual model given the edit."""
    out = []
    for b in range(ids.shape[0]):
        n = int(mask[b].sum())
        row = []
        for t in range(ids.shape[1]):
            prefix = ids[b, : t + 1][None]
            base = model.bridge(prefix)[0, -1]
            if t >= n or t < router.front:
                row.append(model.bridge(ids[b:b + 1], attention_mask=mask[b:b + 1])[0, t])
                continue
            _, states = forward_with_states(model, prefix, torch.ones_like(prefix), router.config.scope_layers)
            best, which = router.scope_logits(states, torch.ones_like(prefix))[0, -1].max(-1)
            if torch.sigmoid(best) > router.threshold:
                cf_ids = torch.tensor([router._prefixes[int(which)] + prefix[0, router.front:].tolist()])
                row.append(router.counterfactual(input_ids=cf_ids).logits[0, -1])
            else:
                row.append(base)
        out.append(torch.stack(row))
    return torch.stack(out)


def test_the_router_equals_a_per_position_loop_and_an_empty_memory_is_the_base(tiny_model, tiny_serac):
    prompts = ["SMAP was created in France", "Paris is located in", "the capital of Japan is a city of music"]
    ids, mask = tiny_model.batch_ids(prompts)
    base = tiny_model.logits(ids, mask)
    router = load_checkpoint(tiny_serac, tiny_model)
    push_router(tiny_model, router)  # served: the model's logits go through it
    assert torch.equal(tiny_model.logits(ids, mask), base)  # empty memory: the bridge's own forward
    router.set_memory([e.request for e in edits()[:3]])
    _, states = forward_with_states(tiny_model, ids, mask, router.config.scope_layers)
    probs = torch.sigmoid(router.scope_logits(states, mask).max(-1).values)[mask.bool()]
    router.threshold = float(probs.median())  # half the positions in scope, half out: both paths are used
    served = tiny_model.logits(ids, mask)
    expected = reference_logits(tiny_model, router, ids, mask)
    real = mask.bool()
    assert_close(served[real], expected[real], "served logits")
    assert not torch.allclose(served[real], base[real])  # some positions were answered by the counterfactual


def test_generating_through_the_router_routes_each_new_position_like_the_whole_sequence(tiny_model, tiny_serac):
    """The cached step (base cache on the twin, running prefix means, a counterfactual cache per row and edit)
    gives the whole-sequence router's last-position logits at every step of a sampled loop."""
    norm = tiny_model.hf.model.norm.weight  # not all ones, so that a state read after the final norm differs
    saved = norm.detach().clone()
    with torch.no_grad():
        norm.mul_(torch.linspace(0.3, 3.0, norm.shape[0]))
    try:
        _check_cached_route(tiny_model, tiny_serac)
    finally:
        with torch.no_grad():
            norm.copy_(saved)


def _check_cached_route(tiny_model, tiny_serac) -> None:
    from kelocate.model import sampling

    router = load_checkpoint(tiny_serac, tiny_model)
    push_router(tiny_model, router)
    router.set_memory([e.request for e in edits()[:3]])
    assert router.config.scope_layers[-1] % tiny_model.n_layers == tiny_model.n_layers - 1  # the last layer too
    ids = tiny_model.batch_ids(["SMAP was created in", "Paris is located in"])[0][:, :4]
    _, states = forward_with_states(tiny_model, ids, torch.ones_like(ids), router.config.scope_layers)
    router.threshold = float(torch.sigmoid(router.scope_logits(states, torch.ones_like(ids)).max(-1).values).median())
    step = sampling.default_step(tiny_model)
    assert step is not None and type(step).__name__ == "_CachedRoute"
    routed = []

    def both(current: torch.Tensor) -> torch.Tensor:
        mine = step(current)
        whole = router(current, torch.ones_like(current))[:, -1]
        assert_close(mine, whole, f"logits after {current.shape[1]} tokens")
        routed.append(bool((whole != tiny_model.bridge(current)[:, -1]).any()))
        return mine

    with torch.no_grad():
        sampling.sample(tiny_model, ids, 12, top_k=4, generator=torch.Generator().manual_seed(1), step=both)
    assert any(routed) and len(routed) == 12  # the counterfactual model answered at some steps


def test_edits_revert_exactly_and_survive_save_and_load(tiny_model, tiny_serac, tmp_path):
    prompt_ids = tiny_model.encode("SMAP was created in").ids
    base = tiny_model.logits(prompt_ids)
    original = weights.state_hash(tiny_model)
    serac = editor("serac", trained=tiny_serac, threshold=0.0)  # threshold 0: everything is in scope
    first = serac.apply(tiny_model, edits()[0].request)
    second = serac.apply(tiny_model, edits()[1].request)
    assert first.names == [] and weights.state_hash(tiny_model) == original  # no weight changes
    assert [r["subject"] for r in second.serving["after"]["memory"]] == ["SMAP", "Paris"]
    assert [r["subject"] for r in second.serving["before"]["memory"]] == ["SMAP"] and first.serving["before"] is None
    assert len(tiny_model.serving) == 2  # one layer per edit, the top one serving both
    assert not torch.equal(tiny_model.logits(prompt_ids), base)
    with pytest.raises(KelocateError, match="revert later edits first"):
        first.revert()
    path = second.save(tmp_path / "serac.safetensors")
    second.revert()
    first.revert()
    assert serving_router(tiny_model) is None and torch.equal(tiny_model.logits(prompt_ids), base)
    # nothing served: applying the saved records loads the router from their checkpoint
    with pytest.raises(KelocateError, match="apply the records it was stacked on first"):
        EditRecord.load(path).apply_to(tiny_model)
    first.apply_to(tiny_model)
    loaded = EditRecord.load(path).apply_to(tiny_model)
    assert [r.subject for r in serving_router(tiny_model).memory] == ["SMAP", "Paris"]
    loaded.revert()
    first.revert()
    assert torch.equal(tiny_model.logits(prompt_ids), base)


def test_the_counterfactual_model_reads_the_edit_and_leaves_the_base_weights_alone(tiny_model, tiny_serac):
    router = load_checkpoint(tiny_serac, tiny_model)
    base = {weights.canonical(n): p for n, p in tiny_model.hf.named_parameters()}
    own = dict(router.counterfactual.named_parameters())
    trained = [n for n in own if n.startswith("model.layers.2.")]
    assert trained and all(own[n].data_ptr() != base[n].data_ptr() for n in trained)
    assert all(own[n].data_ptr() == base[n].data_ptr() for n in own if n not in trained)  # shared, not copied
    request = edits()[0].request
    prefix = fact_prefix(tiny_model, request, "\n")
    assert prefix == tiny_model.tokenizer("SMAP was created in France\n")["input_ids"]
    batch = id_batch([(prefix, [5, 6])], tiny_model.pad_id, tiny_model.device)
    assert batch["target_mask"].sum() == 2


def test_training_lowers_both_losses_on_the_organism(tmp_path):
    from kelocate.loading import load_model
    from kelocate.organism import world_file
    from kelocate.organism.datasets import organism_training_edits
    from kelocate.organism.world import load_world

    organism = load_model()
    data = organism_training_edits(organism, load_world(world_file(organism.path)), 40, held_out=0, draws=2)
    config = SERACConfig(scope_layers=[1, 3, 5], cf_layers=[4, 5], classifier_steps=40, cf_steps=40, batch_size=4,
                         scope_batch_size=32, cf_lr=5e-4, save_every=40)
    train(organism, data, tmp_path / "serac", config)
    log = [json.loads(line) for line in (tmp_path / "serac" / "losses.jsonl").read_text().splitlines()]
    assert [row["step"] for row in log] == list(range(1, 81))
    for phase in ("scope", "counterfactual"):
        rows = [r["loss"] for r in log if r["phase"] == phase]
        first, last = sum(rows[:8]) / 8, sum(rows[-8:]) / 8
        assert last < 0.7 * first, (phase, first, last)


def test_the_scope_classifier_routes_held_out_paraphrases_in_and_unrelated_prompts_out(tmp_path):
    """Trained on 150 organism facts (scope classifier only), served with 20 held-out edits in memory."""
    from kelocate.loading import load_model
    from kelocate.organism import world_file
    from kelocate.organism.datasets import organism_cases, organism_training_edits, unrelated_facts
    from kelocate.organism.world import load_world

    organism = load_model()
    world = load_world(world_file(organism.path))
    data = organism_training_edits(organism, world, 150, held_out=20)
    train(organism, data, tmp_path / "serac", SERACConfig(scope_layers=[1, 3, 5], cf_layers=[5], classifier_steps=300,
                                                          cf_steps=0, save_every=300))
    cases = organism_cases(organism, world, 20)
    assert not {c.request.subject for c in cases} & {e.request.subject for e in data}  # held-out subjects
    router = load_checkpoint(tmp_path / "serac", organism)
    router.set_memory([c.request for c in cases])
    paraphrases = [(p, i) for i, c in enumerate(cases) for p in c.paraphrases]
    routed = router.route([p for p, _ in paraphrases])
    paraphrase_rate = sum(r == i for (r, _), (_, i) in zip(routed, paraphrases, strict=True)) / len(paraphrases)
    unrelated = [p for p, _ in unrelated_facts(organism, world, cases, 100)]
    unrelated_rate = sum(r is None for r, _ in router.route(unrelated)) / len(unrelated)
    print(f"held-out paraphrases routed to their edit: {paraphrase_rate:.3f}; unrelated prompts kept out: "
          f"{unrelated_rate:.3f}")
    assert paraphrase_rate >= 0.85 and unrelated_rate >= 0.85


def test_bad_checkpoints_and_records_are_one_line(tiny_model, tiny_serac, tmp_path, capsys):
    argv = ["edit", "SMAP was created in", "--subject", "SMAP", "--target", "France", "--method", "serac"]
    assert main([*argv, "--trained", str(tmp_path / "missing")]) == 2
    assert main([*argv, "--trained", str(tmp_path)]) == 2  # a folder without a checkpoint
    assert main([*argv, "--trained", str(tiny_serac)]) == 2  # trained for the tiny model, not the organism
    assert main(argv) == 2
    text = " ".join(capsys.readouterr().err.strip().splitlines())
    assert "is not a folder" in text and "holds no SERAC checkpoint" in text and "trained for model" in text
    assert "needs --trained" in text and "Traceback" not in text
    record = editor("serac", trained=tiny_serac).apply(tiny_model, edits()[0].request)
    path = record.save(tmp_path / "serac.safetensors")
    record.revert()
    assert main(["edit", "--apply", str(path), "--save-model", str(tmp_path / "copy")]) == 2
    assert "changes no weights" in capsys.readouterr().err and not (tmp_path / "copy").exists()
    (tiny_serac / "serac.safetensors").write_bytes(b"garbage")
    with pytest.raises(KelocateError, match="not a usable SERAC checkpoint"):
        load_checkpoint(tiny_serac, tiny_model)


def test_a_killed_training_resumes_from_its_last_checkpoint(tiny_model_dir, tmp_path):
    """Killed at step 6 (checkpoint at 4, in the classifier phase): the rerun crosses into the counterfactual one."""
    log = assert_resumes_like_a_straight_run(train, tiny_model_dir, tmp_path, edits, mini, "serac.json")
    assert {r["phase"] for r in log} == {"scope", "counterfactual"}


def test_the_train_command_trains_from_a_file_and_resumes(tiny_model_dir, tmp_path, capsys):
    data = tmp_path / "edits.jsonl"
    data.write_text("".join(json.dumps({**e.request.to_json(), "unrelated": list(e.unrelated),
                                        "neighbours": [list(n) for n in e.neighbours]}) + "\n" for e in edits()))
    argv = ["train", "serac", "--model", str(tiny_model_dir), "--data", str(data), "--out", str(tmp_path / "s"),
            "--classifier-steps", "3", "--cf-steps", "2", "--save-every", "2"]
    assert main(argv) == 0
    assert "SERAC: 6 training edits, 5 steps" in " ".join(capsys.readouterr().out.split())
    assert json.loads((tmp_path / "s" / "serac.json").read_text())["trained_steps"] == 5
    assert main(argv) == 0  # finished: rerunning has nothing left to train
    assert main([*argv[:-4], "--classifier-steps", "0", "--cf-steps", "0"]) == 2
    assert "nothing to train" in capsys.readouterr().err
