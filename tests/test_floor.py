"""The model floor's other rooms: readable labels, the batched scorer, gradients, weights, padded caches, the
stack guard."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tolerances import PROB_TOL, assert_close, tol
from trace_helpers import sharp_tiny_model

from kelocate.errors import KelocateError
from kelocate.model import scoring, weights
from kelocate.model.sites import Patch, cache_activations, patching, site
from kelocate.model.stack import StackUnavailable, guarded_stack
from kelocate.model.tokens import SPACE_MARK, token_label, token_labels


# ---------------------------------------------------------------------- readable labels
def _byte_level_tokenizer():
    """A small byte-level BPE (the kind GPT-2 and SmolLM2 use), trained here."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    texts = ["The Eiffel Tower is located in the city of Paris", "The Tower of London"] * 20
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"],
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                       show_progress=False))
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>")


def test_byte_level_labels_are_readable():
    tok = _byte_level_tokenizer()
    text = "The Eiffel Tower\n is é 😀"
    ids = tok(text)["input_ids"]
    labels = token_labels(tok, ids)
    assert not any("Ġ" in s or "Ċ" in s or "\u2581" in s for s in labels)
    assert f"{SPACE_MARK}Tower" in labels and "\\n" in labels
    # labels of whole characters put back together give the text (space mark and escapes undone)
    joined = "".join(labels).replace(SPACE_MARK, " ").replace("\\n", "\n")
    assert joined.startswith("The Eiffel Tower\n is ")
    # pieces of a multi-byte character (é = c3 a9, never seen in training) show as escaped bytes, never as a
    # replacement character
    assert all("\ufffd" not in s for s in labels)
    assert "\\xc3\\xa9" in joined
    assert token_label(tok, tok.eos_token_id) == "<|endoftext|>"


def test_sentencepiece_labels_are_readable(tiny_model):
    labels = tiny_model.tokens("The language of Japan is")
    assert labels[0] == "<s>" and f"{SPACE_MARK}Japan" in labels
    assert not any("\u2581" in s for s in labels)


# ---------------------------------------------------------------------- the scorer
PAIRS = [("SMAP was created in", "Japan"), ("The language of Japan is", "Japanese group"),
         ("Berlin", "Germany capital of France"), ("the city of Paris is", "Paris")]


def _loop_scores(model, prompt: str, target: str) -> tuple[list[float], list[bool]]:
    """Reference: one unpadded forward of prompt + target, read token by token."""
    t_ids = model.answer_ids(prompt, target)
    p_ids = model.encode(prompt).ids.tolist()
    with torch.no_grad():
        logp = torch.log_softmax(model.hf(torch.tensor([p_ids + t_ids])).logits[0].float(), -1)
    rows = [logp[len(p_ids) - 1 + i] for i in range(len(t_ids))]
    return [float(r[t]) for r, t in zip(rows, t_ids, strict=True)], [int(r.argmax()) == t for r, t in
                                                                       zip(rows, t_ids, strict=True)]


@pytest.mark.parametrize("batch_size", [1, 3, 64])
def test_batched_scores_equal_a_plain_loop(tiny_model, batch_size):
    prompts, targets = zip(*PAIRS, strict=True)
    scores = scoring.score_targets(tiny_model, list(prompts), list(targets), batch_size=batch_size)
    for (prompt, target), score in zip(PAIRS, scores, strict=True):
        logprobs, hits = _loop_scores(tiny_model, prompt, target)
        # log-probs of a padded batch vs one unpadded run: rounding only (log-softmax of logits of size ~5)
        assert np.allclose(score.logprobs, logprobs, atol=tol(10.0), rtol=0)
        assert list(score.hits) == hits
        assert score.logprob == pytest.approx(sum(score.logprobs))
        assert score.accuracy == sum(hits) / len(hits) and score.correct == all(hits)
    assert tiny_model.answer_logprob(*PAIRS[1]) == pytest.approx(scores[1].logprob, abs=tol(10.0))


def test_scorer_errors(tiny_model):
    with pytest.raises(KelocateError, match="one target per prompt"):
        scoring.score_targets(tiny_model, ["a", "b"], ["c"])
    with pytest.raises(KelocateError, match="empty"):
        scoring.score_ids(tiny_model.logits, [[1, 2]], [[]], tiny_model.pad_id)


def test_grad_on_enables_only_the_chosen_parameters(tiny_model):
    down = weights.mlp_out_name(1)
    flags = {n: p.requires_grad for n, p in tiny_model.hf.named_parameters()}
    ids = tiny_model.encode("SMAP was created in").ids
    with scoring.grad_on(tiny_model, [down]) as (param,):
        logits = scoring.forward_with_grad(tiny_model, ids)
        logits[0, -1].logsumexp(-1).backward()
        grads = {weights.canonical(n): p.grad for n, p in tiny_model.hf.named_parameters()}
    assert param is weights.mlp_out(tiny_model, 1)
    assert grads[down] is not None and float(grads[down].abs().sum()) > 0
    assert all(g is None for n, g in grads.items() if n != down)
    assert {n: p.requires_grad for n, p in tiny_model.hf.named_parameters()} == flags
    param.grad = None


# ---------------------------------------------------------------------- weights
def test_accessors_are_the_live_hf_parameters(tiny_model):
    hf = tiny_model.hf
    assert weights.mlp_out(tiny_model, 2) is hf.model.layers[2].mlp.down_proj.weight
    assert weights.mlp_out(tiny_model, 2).shape == (tiny_model.d_model, tiny_model.d_mlp)
    assert weights.mlp_in(tiny_model, -1)["up"] is hf.model.layers[2].mlp.up_proj.weight
    assert weights.attn_out(tiny_model, 0) is hf.model.layers[0].self_attn.o_proj.weight
    assert weights.embedding(tiny_model) is hf.model.embed_tokens.weight
    assert weights.unembedding(tiny_model) is hf.lm_head.weight
    with pytest.raises(KelocateError, match="layers 0..2"):
        weights.mlp_out(tiny_model, 3)


def test_snapshot_restore_is_bit_exact(tiny_model_dir):
    from kelocate.loading import load_model

    model = load_model(tiny_model_dir)
    original = weights.state_hash(model)
    names = [weights.mlp_out_name(0), weights.mlp_out_name(2)]
    snap = weights.snapshot(model, names)
    with torch.no_grad():  # W + dW - dW is not W in float; restoring the copy is
        delta = torch.randn_like(weights.mlp_out(model, 0)) * 0.37
        weights.mlp_out(model, 0).add_(delta).sub_(delta)
        weights.mlp_out(model, 2).mul_(3.0)
    assert weights.state_hash(model) != original
    weights.restore(model, snap)
    assert weights.state_hash(model) == original
    with pytest.raises(KelocateError, match="another model"):
        weights.restore(model, {names[0]: torch.zeros(2, 2)})


def _tensor_set(folder) -> dict[str, tuple[tuple[int, ...], str]]:
    """{name: (shape, dtype)} of every tensor in a Hugging Face folder's safetensors files."""
    from safetensors import safe_open

    out = {}
    for path in sorted(folder.glob("*.safetensors")):
        with safe_open(str(path), "pt") as fh:
            for name in fh.keys():
                piece = fh.get_slice(name)
                out[name] = (tuple(piece.get_shape()), piece.get_dtype())
    return out


@pytest.mark.parametrize("which", ["tiny", "organism"])
def test_a_saved_copy_holds_exactly_the_plain_models_tensors(which, tiny_model_dir, tmp_path):
    """The bridge names every weight again (ln1, mlp.in, attn.q, ...) and adds a zero lm_head.bias: none of
    that may reach a saved copy. Its tensors are the checkpoint's (names, shapes, dtypes), transformers loads
    it with no missing or unexpected key, and it gives the edited model's logits."""
    from transformers import AutoModelForCausalLM

    from kelocate.loading import load_model
    from kelocate.model.twin import save_model

    model = load_model(tiny_model_dir if which == "tiny" else None)
    with torch.no_grad():
        weights.mlp_out(model, 1).add_(torch.randn_like(weights.mlp_out(model, 1)) * 0.1)
    save_model(model, tmp_path / "copy")
    original = _tensor_set(model.path)
    assert _tensor_set(tmp_path / "copy") == original and len(original) == len(weights.parameter_names(model))
    hf, info = AutoModelForCausalLM.from_pretrained(tmp_path / "copy", output_loading_info=True)
    assert not any(info.values()), info  # missing, unexpected, mismatched keys and errors: none
    copy = load_model(tmp_path / "copy")
    assert weights.state_hash(copy) == weights.state_hash(model)
    ids, mask = model.batch_ids(["SMAP was created in", "The language of Japan is"])
    assert torch.equal(copy.logits(ids, mask), model.logits(ids, mask))
    with torch.no_grad():
        assert_close(hf(ids, attention_mask=mask).logits, model.logits(ids, mask), "transformers vs bridge")


# ---------------------------------------------------------------------- padded activation caches
def test_cache_of_a_padded_batch_equals_single_runs(tiny_model):
    prompts = ["SMAP was created in", "The language of Japan is spoken in", "Paris"]
    hooks = [site("mlp_post", 1), site("hidden", 2)]
    cache = cache_activations(tiny_model, prompts, hooks)
    lengths = [len(tiny_model.encode(p)) for p in prompts]
    assert cache.mask.sum(1).tolist() == lengths
    for row, prompt in enumerate(prompts):
        alone = cache_activations(tiny_model, prompt, hooks)
        for hook in hooks:
            assert_close(cache[hook][row, : lengths[row]], alone[hook][0], hook)
    assert cache.real(hooks[0]).shape == (sum(lengths), tiny_model.d_mlp)


# ---------------------------------------------------------------------- the stack guard
@pytest.fixture(scope="module")
def sharp(tmp_path_factory):
    return sharp_tiny_model(tmp_path_factory.mktemp("guard"), n_layers=3, seed=5)


def test_guard_accepts_llama_and_refuses_other_maths(sharp, monkeypatch):
    assert guarded_stack(sharp) is not None
    monkeypatch.setattr(sharp.hf.config, "model_type", "qwen3")
    with pytest.raises(StackUnavailable, match="qwen3"):
        guarded_stack(sharp)


def test_guard_catches_a_llama_whose_maths_differ(tmp_path, monkeypatch):
    """A Llama-typed model whose attention computes something else (here its input is rescaled, as an extra
    norm would) passes the allow-list; the equivalence check refuses it and tracing falls back to the
    oracle, saying so. The bridge's attention class is patched for this test only."""
    from transformer_lens.model_bridge.generalized_components import position_embeddings_attention as pe

    from kelocate.locate.causal_trace import trace

    model = sharp_tiny_model(tmp_path, n_layers=3, seed=6)
    original = pe.PositionEmbeddingsAttentionBridge.forward

    def other_maths(self, hidden_states, *args, **kwargs):
        return original(self, hidden_states * 1.5, *args, **kwargs)

    monkeypatch.setattr(pe.PositionEmbeddingsAttentionBridge, "forward", other_maths)
    with pytest.raises(StackUnavailable, match="differ from the bridge"):
        guarded_stack(model)
    result = trace(model, "SMAP was created in", "SMAP", kinds="hidden", samples=2)
    assert result.config["engine"] == "oracle"
    assert any("fast engine not used" in n for n in result.notes)


def test_trace_under_patching_gives_the_oracles_numbers(sharp):
    from kelocate.locate.causal_trace import trace

    zero_mlp = [Patch(site("mlp", 1), 0.0)]
    plain = trace(sharp, "SMAP was created in", "SMAP", kinds="mlp", samples=3)
    with patching(sharp, zero_mlp):
        fast_asked = trace(sharp, "SMAP was created in", "SMAP", kinds="mlp", samples=3)
        oracle = trace(sharp, "SMAP was created in", "SMAP", kinds="mlp", samples=3, engine="oracle")
    assert plain.config["engine"] == "fast"
    assert fast_asked.config["engine"] == "oracle" and any("hooks are attached" in n for n in fast_asked.notes)
    np.testing.assert_array_equal(fast_asked.grids["mlp"], oracle.grids["mlp"])  # the same code path
    # and the patch really applied: the numbers differ from the unpatched trace
    assert abs(fast_asked.clean_score - plain.clean_score) > 10 * PROB_TOL
    assert guarded_stack(sharp) is not None  # hooks gone after the block
