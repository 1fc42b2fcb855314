"""General ability through the ecosystem's harness (the comprehensive study's Table 5: CSQA, PIQA, TriviaQA,
XSum, MMLU, AGIEval, zero-shot), scored by lm-evaluation-harness (`lm-eval`, the optional extra
`kelocate[eval]`) on the model as it is now, edited weights included.

lm-eval takes an ordinary Hugging Face model: it gets the plain twin (`model.twin.plain_twin`), whose
parameters are the bridge's own tensors, so an edit written in place is what it scores and nothing is
copied. A served editor (SERAC, ICE) changes no weight and answers through kelocate's serving stack, which
lm-eval cannot call: its harness columns are left out, and the row says why.

Task names are lm-eval's (`commonsense_qa`, `piqa`, ... as the user's lm-eval knows them); `include` is a
folder of task YAML files in lm-eval's own format (a local task: the tests write one with its data file,
since no data set can be downloaded here). Every numeric metric lm-eval reports comes back as
`harness.<task>.<metric>` (its `,none` filter suffix dropped, standard errors left out).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from kelocate.errors import KelocateError

PREFIX = "harness."


@dataclass(frozen=True)
class HarnessSpec:
    """What lm-eval runs: its task names, a folder of extra task YAMLs, a cap on documents per task (0: all),
    the few-shot count (the paper: zero-shot) and the batch size."""

    tasks: tuple[str, ...] = ()
    include: str | None = None
    limit: int = 0
    fewshot: int = 0
    batch_size: int = 8
    extra: dict = field(default_factory=dict)  # more simple_evaluate keywords (e.g. a seed), rarely needed


def require_lm_eval():
    """The lm_eval module, or one line of error saying how to install it."""
    try:
        import lm_eval
    except ImportError:
        raise KelocateError("the harness measure needs lm-evaluation-harness: pip install 'kelocate[eval]'") from None
    return lm_eval


def harness_scores(model, spec: HarnessSpec) -> dict[str, float]:
    """lm-eval's metrics of every task of `spec` on the model's current weights (`harness.<task>.<metric>`).
    An unknown task is one line of error naming it."""
    if not spec.tasks:
        return {}
    if len(model.serving):
        raise KelocateError("lm-eval scores a model's weights; this model answers through a served editor "
                            "(SERAC, ICE), which lm-eval cannot call")
    lm_eval = require_lm_eval()
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from kelocate.model.twin import plain_twin

    manager = TaskManager(include_path=spec.include)
    unknown = [t for t in spec.tasks if t not in manager.all_tasks]
    if unknown:
        where = f" or in {spec.include}" if spec.include else "; add a folder of task YAMLs with include"
        raise KelocateError(f"lm-eval knows no task {unknown[0]!r}{where}")
    for name in ("lm-eval", "lm_eval"):  # its per-task warnings would flood a study's progress line
        logging.getLogger(name).setLevel(logging.ERROR)
    lm = HFLM(pretrained=plain_twin(model), tokenizer=model.tokenizer, batch_size=spec.batch_size,
              device=str(model.device))
    out = lm_eval.simple_evaluate(model=lm, tasks=list(spec.tasks), task_manager=manager, num_fewshot=spec.fewshot,
                                  limit=spec.limit or None, log_samples=False, verbosity="ERROR", **spec.extra)
    return _metrics(out["results"])


def _metrics(results: dict) -> dict[str, float]:
    """`harness.<task>.<metric>` of every numeric metric in lm-eval's results (no standard errors, no aliases)."""
    scores: dict[str, float] = {}
    for task, values in results.items():
        for key, value in values.items():
            metric = key.split(",")[0]
            if isinstance(value, int | float) and not isinstance(value, bool) and not metric.endswith("_stderr") \
                    and metric not in ("sample_len",):
                scores[f"{PREFIX}{task}.{metric}"] = float(value)
    return scores


def harness_columns(names: Sequence[str]) -> list[str]:
    """The harness columns among `names`, sorted."""
    return sorted(n for n in names if n.startswith(PREFIX))
