"""AdaLoRA through peft: trained on a plain twin sharing the bridge's weights, merged, reverted bit-exactly;
the bridge's modules are never replaced and the adapter travels with the record."""

from __future__ import annotations

from kelocate.edit import EditRecord, EditRequest, editor
from kelocate.model import weights
from kelocate.model.sites import bridge_has_hooks
from kelocate.model.twin import plain_twin

REQUEST = EditRequest("SMAP was created in", "SMAP", "France")


def test_the_twin_shares_the_bridges_tensors_and_computes_the_same_logits(tiny_model):
    twin = plain_twin(tiny_model)
    shared = {weights.canonical(n): p.data_ptr() for n, p in tiny_model.hf.named_parameters()}
    assert all(shared[n] == p.data_ptr() for n, p in twin.named_parameters())  # no copy
    ids, mask = tiny_model.batch_ids(["SMAP was created in", "the river"])
    bridge = tiny_model.logits(ids, mask)
    plain = twin(input_ids=ids, attention_mask=mask).logits.detach()
    tol = 1e-4 * (1 + float(bridge.abs().max()))  # float32, same maths in another module tree
    assert float((bridge - plain).abs().max()) <= tol


def test_adalora_edits_only_its_targets_and_reverts_exactly(tiny_model, tmp_path):
    original = weights.state_hash(tiny_model)
    modules = {n: type(m).__name__ for n, m in tiny_model.hf.named_modules()}
    before = tiny_model.answer_logprob(REQUEST.prompt, "France")
    record = editor("adalora", layers=[1, 2], steps=8, loss_stop=0.0).apply(tiny_model, REQUEST)
    expected = [f"model.layers.{layer}.self_attn.{m}.weight" for layer in (1, 2) for m in ("q_proj", "v_proj")]
    assert record.names == expected
    assert tiny_model.answer_logprob(REQUEST.prompt, "France") > before  # the target became more likely
    assert {n: type(m).__name__ for n, m in tiny_model.hf.named_modules()} == modules  # no adapter left inside
    assert not bridge_has_hooks(tiny_model.bridge)
    assert any("lora_A" in name for name in record.attachments) and record.extra["steps"] == 8
    path = record.save(tmp_path / "adalora.safetensors")
    record.revert()
    assert weights.state_hash(tiny_model) == original
    loaded = EditRecord.load(path)
    assert set(loaded.attachments) == set(record.attachments)  # the adapter travels with the record
    loaded.apply_to(tiny_model).revert()
    assert weights.state_hash(tiny_model) == original
