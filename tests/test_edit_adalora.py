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


def test_the_orthogonality_penalty_is_what_pefts_forward_adds_to_its_own_loss(tiny_model):
    import torch
    from peft import AdaLoraConfig, AdaLoraModel

    from kelocate.edit.methods.adalora import orthogonality_penalty, target_pattern

    torch.manual_seed(0)
    config = AdaLoraConfig(init_r=4, target_r=2, lora_alpha=8, total_step=5, orth_reg_weight=0.5,
                           target_modules=target_pattern(["q_proj", "v_proj"], [0, 1]), bias="none")
    wrapped = AdaLoraModel(plain_twin(tiny_model), config, "default")
    ids, _ = tiny_model.batch_ids(["SMAP was created in France"])
    out = wrapped(input_ids=ids, labels=ids)  # peft adds 0.5 x its regulariser to the loss it computes
    plain = torch.nn.functional.cross_entropy(out.logits[0, :-1], ids[0, 1:])
    penalty = orthogonality_penalty(wrapped).detach()
    assert float(penalty) > 0.1  # random A and B: far from orthogonal, so the comparison says something
    assert float(out.loss.detach()) == __import__("pytest").approx(float(plain.detach() + 0.5 * penalty), rel=1e-5)
    wrapped.merge_and_unload()


def test_the_reference_run_keeps_every_rank_and_step_and_kelocates_prunes_and_stops(tiny_model):
    original = weights.state_hash(tiny_model)
    reference = editor("adalora", layers=[1], steps=6, loss_stop=0.0, allocate=False, orth_reg_weight=0.5)
    record = reference.apply(tiny_model, REQUEST)
    ranks = {n: int((t != 0).sum()) for n, t in record.attachments.items() if "lora_E" in n}
    assert record.extra["steps"] == 6 and not record.extra["allocated"]
    assert ranks and all(r == 12 for r in ranks.values())  # no singular value masked: rank 12 throughout
    record.revert()
    pruned = editor("adalora", layers=[1], steps=6, loss_stop=0.0).apply(tiny_model, REQUEST)
    ranks = {n: int((t != 0).sum()) for n, t in pruned.attachments.items() if "lora_E" in n}
    # the budget (12 per module at first, 8 at the end) is shared: pruned in all, not necessarily in each
    assert pruned.extra["allocated"] and sum(ranks.values()) < 12 * len(ranks)
    pruned.revert()
    assert weights.state_hash(tiny_model) == original
