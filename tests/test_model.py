"""The model floor: loading (folders, hub cache, errors), bridge == HF, tokenization, spans, answers."""

from __future__ import annotations

import json
import os

import pytest
import torch
from tolerances import assert_close

from kelocate.errors import KelocateError, SubjectNotFoundError
from kelocate.loading import load_model
from kelocate.model import HookedModel
from kelocate.testing.random_model import build_random_llama


def test_bridge_logits_equal_hf_logits(tiny_model: HookedModel):
    ids = tiny_model.encode("SMAP was created in Japan").ids
    bridge_logits = tiny_model.logits(ids)
    with torch.no_grad():
        hf_logits = tiny_model.hf(ids[None]).logits
    assert bridge_logits.shape == hf_logits.shape
    assert_close(bridge_logits, hf_logits, "bridge vs HF logits")  # eager vs sdpa attention: rounding only


def test_bridge_hooks_see_hf_hidden_states(tiny_model: HookedModel):
    ids = tiny_model.encode("The language of Japan is").ids[None]
    names = [tiny_model.hook_name("embed")] + [tiny_model.hook_name("hidden", i) for i in range(3)]
    _, cache = tiny_model.bridge.run_with_cache(ids, names_filter=lambda n: n in names)
    with torch.no_grad():
        hidden = tiny_model.hf(ids, output_hidden_states=True).hidden_states
    assert torch.equal(cache["hook_embed"], hidden[0])  # an embedding lookup: no arithmetic at all
    for layer in range(2):  # HF's last hidden state is after the final norm
        assert_close(cache[f"blocks.{layer}.hook_resid_post"], hidden[layer + 1], f"hidden {layer}")


def test_in_place_weight_edit_is_seen_by_the_bridge(tiny_model_dir):
    model = load_model(tiny_model_dir)
    ids = model.encode("SMAP was created in").ids
    before = model.logits(ids).clone()
    with torch.no_grad():
        model.hf.model.layers[1].mlp.down_proj.weight.mul_(2.0)
    after = model.logits(ids)
    with torch.no_grad():
        assert_close(after, model.hf(ids[None]).logits, "edited bridge vs HF")
    assert float((before - after).abs().max()) > 1e-2


def test_encode_follows_the_tokenizer_default(tiny_model: HookedModel):
    enc = tiny_model.encode("SMAP was created in")
    default = tiny_model.tokenizer("SMAP was created in")["input_ids"]  # what the tokenizer does on its own
    assert enc.ids.tolist() == default and default[0] == tiny_model.tokenizer.bos_token_id
    assert enc.offsets[0] == (0, 0)
    plain = tiny_model.encode("SMAP was created in", special=False)
    assert plain.ids.tolist() == tiny_model.tokenizer("SMAP was created in", add_special_tokens=False)["input_ids"]
    for a, b in enc.offsets[1:]:
        assert 0 <= a < b <= len(enc.text)
    assert tiny_model.encoding == "tokenizer default (prefix <s>)"


def test_a_tokenizer_without_bos_gets_none(tmp_path):
    """SmolLM2's tokenizer adds no BOS; forcing one changes its predictions, so none may be added."""
    path = build_random_llama(tmp_path / "nobos", n_layers=1)
    config = json.loads((path / "tokenizer.json").read_text())
    config["post_processor"] = None
    (path / "tokenizer.json").write_text(json.dumps(config))
    model = load_model(path)
    enc = model.encode("SMAP was created in")
    assert enc.ids.tolist() == model.tokenizer("SMAP was created in")["input_ids"]
    assert model.tokenizer.bos_token_id not in enc.ids.tolist()
    assert model.subject_span("SMAP was created in", "SMAP")[0] == 0
    assert model.encoding == "tokenizer default (no prefix token)"


def test_an_appended_eos_is_dropped(tmp_path):
    """A tokenizer whose default appends EOS (T5-style) must not end a prompt that is to be continued."""
    path = build_random_llama(tmp_path / "eos", n_layers=1)
    config = json.loads((path / "tokenizer.json").read_text())
    config["post_processor"] = {"type": "TemplateProcessing",
                                "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                                           {"Sequence": {"id": "A", "type_id": 0}},
                                           {"SpecialToken": {"id": "</s>", "type_id": 0}}],
                                "pair": [{"Sequence": {"id": "A", "type_id": 0}}],
                                "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]},
                                                   "</s>": {"id": "</s>", "ids": [2], "tokens": ["</s>"]}}}
    (path / "tokenizer.json").write_text(json.dumps(config))
    model = load_model(path)
    default = model.tokenizer("SMAP was created in")["input_ids"]
    assert default[-1] == model.tokenizer.eos_token_id  # the tokenizer does append it
    assert model.encode("SMAP was created in").ids.tolist() == default[:-1]


def _span_by_decoding(model: HookedModel, prompt: str, subject: str) -> tuple[int, int]:
    """Reference without offsets: token i covers the characters its decoding adds to the decoded prefix.

    Decoding ids[:i] and ids[:i + 1] (special tokens skipped) gives the text before and through token i;
    the tokens whose added characters (leading whitespace aside) overlap the subject form the span.
    """
    ids = model.encode(prompt).ids.tolist()
    start_char = prompt.rfind(subject)
    end_char = start_char + len(subject)
    inside = []
    for i in range(len(ids)):
        before = model.tokenizer.decode(ids[:i], skip_special_tokens=True)
        through = model.tokenizer.decode(ids[: i + 1], skip_special_tokens=True)
        added = through[len(before):]
        a = len(before) + len(added) - len(added.lstrip())
        b = len(through)
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
    assert span == _span_by_decoding(tiny_model, prompt, subject)
    start, end = span
    enc = tiny_model.encode(prompt)
    covered = prompt[enc.offsets[start][0]:enc.offsets[end - 1][1]]
    assert subject in covered and covered.strip().startswith(subject.split()[0][:1])


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


def test_top_k_equals_a_plain_softmax_of_the_bridge_logits(tiny_model: HookedModel):
    """top_k against the bridge's last-position logits, softmaxed and ranked by a plain loop in float64."""
    import math

    prompt = "SMAP was created in"
    with torch.no_grad():
        logits = tiny_model.bridge(tiny_model.encode(prompt).ids[None])[0, -1].double().tolist()
    top = max(logits)
    total = sum(math.exp(x - top) for x in logits)
    ranked = sorted(range(len(logits)), key=lambda i: logits[i], reverse=True)[:5]
    rows = tiny_model.top_k(prompt, 5)
    assert [token for token, _ in rows] == [tiny_model.decode([i]) for i in ranked]
    for (_, prob), i in zip(rows, ranked, strict=True):
        assert prob == pytest.approx(math.exp(logits[i] - top) / total, rel=1e-5)
    with pytest.raises(KelocateError):
        tiny_model.top_k("SMAP", 0)


def test_greedy_generation_equals_a_plain_argmax_loop(tiny_model: HookedModel):
    ids = tiny_model.encode("SMAP was created in").ids.tolist()
    new = []
    for _ in range(5):  # reference: feed the whole sequence again and take the argmax each step
        with torch.no_grad():
            nxt = int(tiny_model.hf(torch.tensor([ids + new])).logits[0, -1].argmax())
        if nxt == tiny_model.tokenizer.eos_token_id:
            break
        new.append(nxt)
    expected = tiny_model.tokenizer.decode(new, skip_special_tokens=True)
    assert tiny_model.generate("SMAP was created in", 5) == expected


def test_load_errors_are_one_line(tmp_path):
    with pytest.raises(KelocateError, match="nor in the local Hugging Face cache"):
        load_model("no-such-org/no-such-model-xyz")
    with pytest.raises(KelocateError, match="does not exist"):
        load_model(str(tmp_path / "missing.gguf"))
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
        assert_close(model.logits(ids), model.hf(ids[None]).logits, "GQA bridge vs HF")


def _fake_hub_cache(root, repo_id: str, files_from) -> str:
    """Lay out `files_from` as the Hugging Face cache does: models--owner--name/{refs/main, snapshots/REV}."""
    revision = "0123456789abcdef0123456789abcdef01234567"
    repo = root / ("models--" + repo_id.replace("/", "--"))
    snap = repo / "snapshots" / revision
    snap.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    for f in files_from.iterdir():
        (snap / f.name).write_bytes(f.read_bytes())
    return revision


def test_hub_id_with_owner_resolves_from_the_local_cache(tmp_path, tiny_model_dir, monkeypatch):
    import huggingface_hub.constants

    revision = _fake_hub_cache(tmp_path / "hub", "some-owner/tiny-llama", tiny_model_dir)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    model = load_model("some-owner/tiny-llama")
    assert model.name == "some-owner/tiny-llama" and model.source["revision"] == revision
    ids = model.encode("SMAP was created in").ids
    reference = load_model(tiny_model_dir)
    assert torch.equal(model.logits(ids), reference.logits(ids))  # same weights, same path: identical
    with pytest.raises(KelocateError, match="local Hugging Face cache"):
        load_model("some-owner/other-model")


def test_gguf_without_the_gguf_package_is_one_line(tmp_path, monkeypatch):
    import importlib.util

    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"GGUF")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gguf" else real(name, *a))
    with pytest.raises(KelocateError, match=r"pip install 'kelocate\[gguf\]'"):
        load_model(fake)


def test_fingerprint_names_the_weights_not_the_edits(tiny_model_dir):
    a, b = load_model(tiny_model_dir), load_model(tiny_model_dir)
    assert a.fingerprint == b.fingerprint
    with torch.no_grad():
        a.hf.model.layers[0].mlp.down_proj.weight.add_(1.0)
    assert a.fingerprint == b.fingerprint  # fixed at load: an edit does not change which model it is
    assert load_model(tiny_model_dir, dtype="bf16").fingerprint != b.fingerprint


def test_the_organism_has_one_provenance_whichever_way_it_is_loaded(tmp_path):
    from kelocate.model.load import open_model
    from kelocate.organism import checkpoint_dir, provenance_of

    organism = load_model()
    assert organism.name == "organism" and "SMAP" in organism.entity_names
    prov = organism.provenance
    assert prov.is_organism and prov.family == "organism" and organism.entity_names == prov.entity_names
    texts, description = organism.own_corpus()
    assert texts and "organism training text" in description
    by_name, by_path = load_model("organism"), load_model(checkpoint_dir())
    relative = load_model(os.path.relpath(checkpoint_dir()))
    opened = open_model(checkpoint_dir(), provenance=provenance_of(checkpoint_dir()))
    for other in (by_name, by_path, relative, opened):
        assert other.provenance == prov  # family, entity names and corpus (by folder) all equal
    assert by_path.name == str(checkpoint_dir())  # only the name shown follows what was asked for


def test_provenance_is_frozen(tiny_model):
    import dataclasses

    from kelocate.model import Provenance

    organism = load_model()
    for name in ("provenance", "entity_names", "own_corpus"):
        with pytest.raises(AttributeError):
            setattr(organism, name, None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        organism.provenance.family = ""  # type: ignore[misc]
    with pytest.raises(TypeError):
        organism.source["family"] = "organism"  # type: ignore[index]
    assert "family" not in organism.source
    for name in ("router", "name", "serving"):  # no public attribute is set after loading, new or old
        with pytest.raises(AttributeError, match=r"set at load.*`model\.serving`"):
            setattr(tiny_model, name, None)
        with pytest.raises(AttributeError):
            delattr(tiny_model, name)
    assert tiny_model.serving is not None and not hasattr(tiny_model, "router")
    assert tiny_model.provenance == Provenance() and not tiny_model.provenance.is_organism
    assert tiny_model.entity_names == () and tiny_model.own_corpus is None


def test_a_known_model_not_yet_fetched_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("KELOCATE_MODELS", str(tmp_path / "models"))
    with pytest.raises(KelocateError, match=r"not been fetched yet; run `kelocate models fetch smollm2`"):
        load_model("smollm2")
