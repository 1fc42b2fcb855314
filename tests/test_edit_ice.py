"""ICE and IKE: the documented prompt goes before every prompt (a text layer on the model's serving stack)
and moves p(target) up, no weight changes, exact revert through the record (also after save/load, and in
reverse order when stacked), and IKE's retrieval equals a plain cosine loop."""

from __future__ import annotations

import pytest
import torch

from kelocate.edit import EditRecord, EditRequest, editor
from kelocate.edit.methods.ice import IKE, demonstration, embed
from kelocate.errors import KelocateError
from kelocate.model import weights

REQUEST = EditRequest("SMAP was created in", "SMAP", "France", paraphrases=("SMAP originated in",))
POOL = [EditRequest("Paris is the capital of", "Paris", "Japan"),
        EditRequest("SMAP group was created in", "SMAP group", "Germany", paraphrases=("SMAP group is from",)),
        EditRequest("the river is located in", "the river", "Berlin")]


def test_ice_builds_the_documented_prompt_and_reverts_exactly(tiny_model, tmp_path):
    original = weights.state_hash(tiny_model)
    before = tiny_model.answer_logprob("SMAP originated in", "France")
    record = editor("ice").apply(tiny_model, REQUEST)
    assert tiny_model.context == "New Fact: SMAP was created in France\nPrompt: "
    plain = tiny_model.tokenizer("New Fact: SMAP was created in France\nPrompt: SMAP originated in")["input_ids"]
    assert tiny_model.encode("SMAP originated in").ids.tolist() == plain  # every prompt is read after it
    assert tiny_model.answer_logprob("SMAP originated in", "France") > before  # the fact it reads moves p up
    assert record.names == [] and weights.state_hash(tiny_model) == original  # no weight changes
    path = record.save(tmp_path / "ice.safetensors")
    record.revert()
    assert tiny_model.context == "" and tiny_model.answer_logprob("SMAP originated in", "France") == before
    loaded = EditRecord.load(path).apply_to(tiny_model)
    assert tiny_model.context == "New Fact: SMAP was created in France\nPrompt: "
    loaded.revert()
    assert tiny_model.context == ""


def test_ice_moves_the_new_target_up_on_the_organism():
    """On 10 counterfactual edits of the organism's known facts: log p(target) rises (measured: +3.0 nats on
    average, 9 of 10 up, one unchanged), and every revert gives the plain model back."""
    from kelocate.loading import load_model
    from kelocate.organism import world_file
    from kelocate.organism.datasets import organism_cases
    from kelocate.organism.world import load_world

    organism = load_model()
    gains = []
    for case in organism_cases(organism, load_world(world_file(organism.path)), 10):
        request = case.request
        before = organism.answer_logprob(request.prompt, request.target_new)
        record = editor("ice").apply(organism, request)
        gains.append(organism.answer_logprob(request.prompt, request.target_new) - before)
        record.revert()
        assert organism.context == "" and organism.answer_logprob(request.prompt, request.target_new) == before
    assert sum(gains) / len(gains) > 1.0 and sum(g > 0 for g in gains) >= 8, gains


def test_stacked_in_context_edits_revert_in_reverse_order(tiny_model):
    first = editor("ice").apply(tiny_model, REQUEST)
    second = editor("ice").apply(tiny_model, POOL[0])
    assert tiny_model.context.count("New Fact:") == 2
    with pytest.raises(KelocateError, match="revert later edits first"):
        first.revert()
    second.revert()
    first.revert()
    assert tiny_model.context == ""


def test_ike_retrieves_the_nearest_demonstrations_and_formats_them(tiny_model):
    ike = IKE(pool=[REQUEST, *POOL], k=2)
    chosen = ike.retrieve(tiny_model, REQUEST, 2)
    # a plain loop: cosine of mean last-layer states, the edit itself left out
    query = embed(tiny_model, ["SMAP was created in France"])[0]
    scores = []
    for r in POOL:
        v = embed(tiny_model, [f"{r.prompt} {r.target_new}"])[0]
        scores.append(float(v @ query / (v.norm() * query.norm())))
    expected = [POOL[i] for i in sorted(range(3), key=lambda i: -scores[i])[:2]]
    assert chosen == expected
    record = ike.apply(tiny_model, REQUEST)
    try:
        assert tiny_model.context == "".join(demonstration(d) for d in expected) + \
            "New Fact: SMAP was created in France\nPrompt: "
        assert demonstration(POOL[1]) == "New Fact: SMAP group was created in Germany\nPrompt: SMAP group is from " \
                                         "Germany\n\n"
    finally:
        record.revert()
    with pytest.raises(KelocateError, match="ike needs demonstrations"):
        IKE().apply(tiny_model, REQUEST)


def test_scoring_and_subject_spans_follow_the_context(tiny_model):
    record = editor("ice").apply(tiny_model, REQUEST)
    try:
        start, end = tiny_model.subject_span("SMAP was created in", "SMAP")
        ids = tiny_model.encode("SMAP was created in").ids
        assert tiny_model.decode(ids[start:end].tolist()).strip() == "SMAP"  # the prompt's SMAP, after the context
        assert start > len(tiny_model.tokenizer("New Fact:")["input_ids"])
    finally:
        record.revert()


def test_ike_from_the_command_line_takes_its_pool_from_a_file(tiny_model_dir, tmp_path, capsys):
    import json

    from kelocate.cli import main

    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(json.dumps(r.to_json()) + "\n" for r in POOL))
    argv = ["edit", "SMAP was created in", "--subject", "SMAP", "--target", "France", "--method", "ike",
            "--model", str(tiny_model_dir)]
    assert main([*argv, "--pool", str(pool)]) == 0
    out = " ".join(capsys.readouterr().out.split())  # rich wraps long lines
    assert "IKE edit, no weight changed: served from in-context text" in out
    assert "New Fact: SMAP group was created in Germany" in out  # the nearest demo
    assert main(argv) == 2
    assert main([*argv, "--pool", str(tmp_path / "missing.jsonl")]) == 2
    err = capsys.readouterr().err
    assert "needs --pool FILE" in err and "--pool" in err and "does not exist" in err and "Traceback" not in err


def test_the_serving_stack_serves_texts_in_order_and_the_top_forward(tiny_model):
    """The model reads the stack's texts in push order and answers with its top forward override; a layer is
    removed only when no layer above it overrides the same thing (text over text, forward over forward)."""
    from kelocate.model.serving import ServingLayer

    ids = tiny_model.encode("SMAP was created in").ids
    plain = tiny_model.logits(ids)
    first = editor("ice").apply(tiny_model, REQUEST)
    shifted = tiny_model.serving.push(ServingLayer("test", forward=lambda i, m: tiny_model.bridge(i, attention_mask=m)
                                                   + 1.0))
    try:
        assert tiny_model.context == "New Fact: SMAP was created in France\nPrompt: "  # a forward layer adds no text
        with torch.no_grad():
            assert torch.equal(tiny_model.logits(ids), tiny_model.bridge(ids[None]) + 1.0)  # the top forward answers
        with tiny_model.without_context():
            assert tiny_model.context == "" and tiny_model.encode("SMAP").ids.tolist() == \
                tiny_model.tokenizer("SMAP")["input_ids"]
        second = editor("ice").apply(tiny_model, POOL[0])  # text above text: the first waits for it
        with pytest.raises(KelocateError, match="revert later edits first"):
            first.revert()
        second.revert()
        first.revert()  # under a forward layer: it overrides no text, so the text can go
        assert tiny_model.context == "" and len(tiny_model.serving) == 1
    finally:
        tiny_model.serving.pop(shifted)
    assert len(tiny_model.serving) == 0 and torch.equal(tiny_model.logits(ids), plain)
    with pytest.raises(KelocateError, match="does not serve"):
        tiny_model.serving.pop(shifted)


def test_a_record_saved_before_the_serving_stack_still_applies(tiny_model, tmp_path):
    """Records written with `context_before/after` (before the `serving` field) load into it and apply."""
    import json

    from safetensors.torch import load_file, safe_open, save_file

    path = editor("ice").apply(tiny_model, REQUEST).save(tmp_path / "ice.safetensors")
    EditRecord.load(path).revert(tiny_model)
    with safe_open(str(path), "pt") as handle:
        meta = json.loads(handle.metadata()["kelocate"])
    serving = meta.pop("serving")
    meta |= {"context_before": serving["before"], "context_after": serving["after"], "memory_before": None,
             "memory_after": None}
    save_file(load_file(str(path)), str(tmp_path / "old.safetensors"), metadata={"kelocate": json.dumps(meta)})
    loaded = EditRecord.load(tmp_path / "old.safetensors")
    assert loaded.serving == {"before": "", "after": "New Fact: SMAP was created in France\nPrompt: "}
    loaded.apply_to(tiny_model)
    assert tiny_model.context == "New Fact: SMAP was created in France\nPrompt: "
    loaded.revert()
    assert tiny_model.context == ""
