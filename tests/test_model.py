"""The hooked-model layer: loading, bridge == HF, tokenizer helpers, subject spans, answers."""

from __future__ import annotations

import json

import pytest
import torch

from kelocate.errors import KelocateError, SubjectNotFoundError
from kelocate.model import HookedModel, load_model
from kelocate.random_model import build_random_llama


def test_bridge_logits_equal_hf_logits(tiny_model: HookedModel):
    ids = tiny_model.encode("SMAP was created in Japan").ids
    bridge_logits = tiny_model.logits(ids)
    with torch.no_grad():
        hf_logits = tiny_model.hf(ids[None]).logits
    assert bridge_logits.shape == hf_logits.shape
    assert torch.allclose(bridge_logits, hf_logits, atol=1e-5)


def test_bridge_hooks_see_hf_hidden_states(tiny_model: HookedModel):
    ids = tiny_model.encode("The language of Japan is").ids[None]
    names = [tiny_model.hook_name("embed")] + [tiny_model.hook_name("hidden", i) for i in range(3)]
    _, cache = tiny_model.bridge.run_with_cache(ids, names_filter=lambda n: n in names)
    with torch.no_grad():
        hidden = tiny_model.hf(ids, output_hidden_states=True).hidden_states
    assert torch.allclose(cache["hook_embed"], hidden[0], atol=1e-6)
    for layer in range(2):  # HF's last hidden state is after the final norm
        assert torch.allclose(cache[f"blocks.{layer}.hook_resid_post"], hidden[layer + 1], atol=1e-5)


def test_in_place_weight_edit_is_seen_by_the_bridge(tiny_model_dir):
    model = load_model(tiny_model_dir)
    ids = model.encode("SMAP was created in").ids
    before = model.logits(ids).clone()
    with torch.no_grad():
        model.hf.model.layers[1].mlp.down_proj.weight.mul_(2.0)
    after = model.logits(ids)
    with torch.no_grad():
        assert torch.allclose(after, model.hf(ids[None]).logits, atol=1e-5)
    assert not torch.allclose(before, after)


def test_encode_prepends_bos_and_keeps_offsets(tiny_model: HookedModel):
    enc = tiny_model.encode("SMAP was created in")
    assert int(enc.ids[0]) == tiny_model.bos_id
    assert enc.offsets[0] == (0, 0)
    no_bos = tiny_model.encode("SMAP was created in", prepend_bos=False)
    assert torch.equal(enc.ids[1:], no_bos.ids)
    for a, b in enc.offsets[1:]:
        assert 0 <= a < b <= len(enc.text)


def _span_by_loop(model: HookedModel, prompt: str, subject: str, prepend_bos: bool = True) -> tuple[int, int]:
    """Reference: the tokens whose decoded text (leading '▁' dropped) overlaps the subject's characters."""
    start_char = prompt.rfind(subject)
    end_char = start_char + len(subject)
    enc = model.encode(prompt, prepend_bos)
    inside = []
    for i, (a, b) in enumerate(enc.offsets):
        piece = prompt[a:b]
        a += len(piece) - len(piece.lstrip())
        if b > a and a < end_char and b > start_char:
            inside.append(i)
    return inside[0], inside[-1] + 1


@pytest.mark.parametrize("prompt,subject", [
    ("SMAP was created in", "SMAP"),  # subject right after BOS, first word (no leading space in text)
    ("The language of Japan is", "Japan"),  # mid-prompt, SentencePiece leading-space piece
    ("The language of Japan is", "language of Japan"),  # multi-word subject
    ("Berlin Germany capital", "Germany capital"),  # subject at the end
    ("the city of Paris Paris is", "Paris"),  # repeated: the last occurrence
])
def test_subject_span_matches_reference(tiny_model: HookedModel, prompt: str, subject: str):
    span = tiny_model.subject_span(prompt, subject)
    assert span == _span_by_loop(tiny_model, prompt, subject)
    start, end = span
    enc = tiny_model.encode(prompt)
    covered = prompt[enc.offsets[start][0]:enc.offsets[end - 1][1]]
    assert subject in covered and covered.strip().startswith(subject.split()[0][:1])


def test_subject_span_without_bos_shifts_by_one(tiny_model: HookedModel):
    with_bos = tiny_model.subject_span("The language of Japan is", "Japan")
    without = tiny_model.subject_span("The language of Japan is", "Japan", prepend_bos=False)
    assert with_bos == (without[0] + 1, without[1] + 1)


def test_subject_missing_from_prompt_is_a_clear_error(tiny_model: HookedModel):
    with pytest.raises(SubjectNotFoundError, match="does not occur in the prompt"):
        tiny_model.subject_span("SMAP was created in", "Berlin")
    with pytest.raises(SubjectNotFoundError, match="empty"):
        tiny_model.subject_span("SMAP was created in", "  ")


def test_answer_ids_and_logprob_match_a_manual_computation(tiny_model: HookedModel):
    prompt, answer = "The language of Japan is", "Japanese group"
    ids = tiny_model.answer_ids(prompt, answer)
    assert tiny_model.decode(ids).strip() == answer
    full = torch.cat([tiny_model.encode(prompt).ids, torch.tensor(ids)])
    with torch.no_grad():
        logp = torch.log_softmax(tiny_model.hf(full[None]).logits[0], -1)
    n = len(tiny_model.encode(prompt))
    manual = sum(float(logp[n - 1 + i, t]) for i, t in enumerate(ids))
    assert tiny_model.answer_logprob(prompt, answer) == pytest.approx(manual, abs=1e-4)
    assert tiny_model.answer_prob(prompt, answer) == pytest.approx(float(torch.tensor(manual).exp()), rel=1e-4)


def test_top_k_is_sorted_and_matches_next_token_probs(tiny_model: HookedModel):
    rows = tiny_model.top_k("SMAP was created in", 5)
    probs = [p for _, p in rows]
    assert probs == sorted(probs, reverse=True) and len(rows) == 5
    assert probs[0] == pytest.approx(float(tiny_model.next_token_probs("SMAP was created in").max()))
    with pytest.raises(KelocateError):
        tiny_model.top_k("SMAP", 0)


def test_greedy_generation_is_deterministic(tiny_model: HookedModel):
    assert tiny_model.generate("SMAP was created in", 5) == tiny_model.generate("SMAP was created in", 5)


def test_load_errors_are_one_line(tmp_path):
    with pytest.raises(KelocateError, match="neither a local directory nor in the local Hugging Face cache"):
        load_model("no-such-org/no-such-model-xyz")
    with pytest.raises(KelocateError, match="neither a local directory"):
        load_model(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(KelocateError, match="no config.json"):
        load_model(tmp_path / "empty")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(KelocateError) as info:
        load_model(broken)
    assert "\n" not in str(info.value)


def test_check_layer(tiny_model: HookedModel):
    assert tiny_model.check_layer(-1) == 2
    with pytest.raises(KelocateError, match="layers 0..2"):
        tiny_model.check_layer(3)


def test_dtype_option(tiny_model_dir):
    model = load_model(tiny_model_dir, dtype="bfloat16")
    assert model.dtype == torch.bfloat16
    with pytest.raises(KelocateError, match="unknown dtype"):
        load_model(tiny_model_dir, dtype="float8")


def test_grouped_query_attention_model_loads(tmp_path):
    """Llama-2-70B / Llama-3 style models use fewer key/value heads; the layer must handle them."""
    from transformers import LlamaConfig, LlamaForCausalLM

    base = build_random_llama(tmp_path / "base", n_layers=2)
    cfg = LlamaConfig.from_pretrained(base)
    cfg.num_key_value_heads = 2
    LlamaForCausalLM(cfg).save_pretrained(tmp_path / "gqa")
    for f in base.glob("tokenizer*"):
        (tmp_path / "gqa" / f.name).write_bytes(f.read_bytes())
    model = load_model(tmp_path / "gqa")
    ids = model.encode("SMAP was created in").ids
    with torch.no_grad():
        assert torch.allclose(model.logits(ids), model.hf(ids[None]).logits, atol=1e-5)
