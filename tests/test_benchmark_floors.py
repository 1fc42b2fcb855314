"""benchmarks/floors.py: the FLOP counts behind the machine's floors equal the products the code really runs,
counted by torch's FlopCounterMode (a plain count of every matrix product dispatched)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from kelocate.edit.keys import templates_for
from kelocate.edit.methods.rome import ROME
from kelocate.edit.request import EditRequest
from kelocate.edit.target import essence_rows, optimize_target, rewriting_rows
from kelocate.model.stack import guarded_stack

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import floors  # noqa: E402

PRODUCTS = ("aten.mm", "aten.addmm")


@pytest.fixture(scope="module")
def gqa_model(tmp_path_factory):
    """A 4-layer random Llama with grouped-query attention (4 heads over 2 key/value heads), as SmolLM2's."""
    from kelocate.loading import load_model
    from kelocate.testing.random_model import build_random_llama

    return load_model(build_random_llama(tmp_path_factory.mktemp("floors"), n_layers=4, d_model=64, d_mlp=128,
                                         n_heads=4, n_kv_heads=2, seed=3))


def _products(run) -> int:
    """FLOPs of the matrix products (mm, addmm) dispatched while `run()` runs, backward passes included."""
    with FlopCounterMode(display=False) as counter:
        run()
    return sum(n for op, n in counter.get_flop_counts()["Global"].items() if str(op) in PRODUCTS)


def test_one_layer_at_one_position_costs_what_the_block_multiplies(gqa_model):
    stack = guarded_stack(gqa_model)
    hidden = torch.randn(1, 1, gqa_model.d_model)
    with torch.no_grad():
        counted = _products(lambda: stack.block(1, hidden))
    assert counted == floors.layer_matmul_flops(gqa_model)


def test_the_rome_step_floor_is_the_engines_work_less_what_it_need_not_do(gqa_model):
    """One more step of the block runner's target optimisation multiplies exactly: the floor, plus the edited
    layer's forward and the padding the runner carries (rows are padded to the longest own part)."""
    layer = 1
    hp = dict(ROME().hparams(gqa_model), loss_stop=0.0, token="last_subject")
    request = EditRequest(prompt="alpha beta gamma delta epsilon", subject="beta gamma", target_new="zeta eta")
    templates = templates_for(gqa_model, hp)

    def steps(n: int) -> int:
        return _products(lambda: optimize_target(gqa_model, request, layer, ("mlp",), templates,
                                                 dict(hp, v_num_grad_steps=n), engine="stack"))

    steps(2)  # the runner's one-time check
    one_step = steps(3) - steps(2)  # one more forward and one more backward
    floor = floors.rome_step_floor(gqa_model, request, layer, templates, hp)
    rows = rewriting_rows(gqa_model, request, templates) + essence_rows(gqa_model, request, hp["kl_prompts"])
    padded = len(rows) * max(len(r.ids) - r.position for r in rows)
    per_layer = floors.layer_matmul_flops(gqa_model)
    above = gqa_model.n_layers - 1 - layer
    extra = padded * per_layer + 2 * above * (padded - floor["positions"]) * per_layer
    assert floor["rows"] == len(rows) and floor["positions"] < padded
    assert one_step == floor["flops"] + extra
