"""How kelocate's results show themselves in Jupyter: a figure and the key numbers, as HTML.

Registered with `kelocate.display` when `kelocate` is imported; the classes' `_repr_html_` asks for them.
- a trace: its heatmaps and the clean / corrupted probability with the top layers per kind;
- an edit record: ||dW||_F per written layer, the requests, the parameters and whether it is applied;
- a value projection: the top tokens' logits; an edit projection: Hit@k of the top dW columns before and after
  with the controls, and what the columns say;
- a sparsity result: the cumulative share of mass over the sorted columns, and the concentration measures.
"""

from __future__ import annotations

import html
from typing import Any

from kelocate import display

STYLE = "font-family: system-ui, sans-serif; font-size: 13px"


def _box(title: str, *parts: str) -> str:
    return f'<div style="{STYLE}"><b>{html.escape(title)}</b>' + "".join(parts) + "</div>"


def _figure(fig) -> str:
    from kelocate.plots.html import img_tag, png_bytes

    return "<div>" + img_tag(png_bytes(fig, dpi=100), "figure") + "</div>"


def trace_html(result) -> str:
    """A trace: heatmaps side by side and its top layers."""
    from kelocate.plots.html import table
    from kelocate.plots.trace import trace_heatmap

    located = result.located(3)
    rows = [[kind, where, repr(v["label"]), ", ".join(map(str, v["layers"])), f"{v['effect']:+.3f}"]
            for kind, per in located.items() for where, v in per.items()]
    status = "valid" if result.valid else "locates nothing: " + "; ".join(result.problems)
    figures = "".join(_figure(trace_heatmap(result, kind)) for kind in result.base_kinds)
    return _box(f"causal trace of {result.prompt!r} -> {result.answer!r} (subject {result.subject!r})",
                f"<p>p(answer) clean {result.clean_score:.3f}, subject corrupted {result.corrupted_score:.3f}; "
                f"{html.escape(status)}</p>", f'<div style="display: flex; flex-wrap: wrap">{figures}</div>',
                table(["kind", "token", "label", "top layers", "effect"], rows) if rows else "")


def record_html(record) -> str:
    """An edit record: |dW| per layer and what it edited."""
    from kelocate.plots.html import table
    from kelocate.plots.inline import layer_norms_figure

    state = "applied" if record.applied else "not applied (reverted or never applied)"
    requests = [[r.get("prompt", ""), str(r.get("target_new", "")), str(r.get("ground_truth") or "")]
                for r in record.requests]
    params = []
    for name in record.names:
        delta, base = float(record.delta(name).double().norm()), float(record.before[name].double().norm())
        params.append([name, "x".join(map(str, record.before[name].shape)), f"{delta:.4g}",
                       f"{delta / base:.3g}" if base > 0 else "-"])
    parts = [f"<p>{html.escape(state)}; layers {record.layers or '-'}; {record.changed_elements()} values "
             f"changed; model fingerprint {html.escape(record.fingerprint)}</p>"]
    if params:
        labels = [n.removeprefix("model.").removesuffix(".weight").replace("layers.", "L").replace(".mlp", "")
                  for n in record.names]
        parts.append(_figure(layer_norms_figure(labels, [float(p[2]) for p in params], f"{record.method}: ||dW||_F")))
        parts.append(table(["parameter", "shape", "||dW||_F", "||dW||_F / ||W||_F"], params))
    elif record.serving is not None:
        parts.append("<p>served: the model's weights are untouched; its answers come from the serving stack</p>")
    parts.append(table(["prompt", "new target", "old answer"], requests))
    return _box(f"{record.method} edit", *parts)


def value_projection_html(result) -> str:
    from kelocate.plots.inline import token_logits_figure

    how = "final norm, then the unembedding" if result.final_norm else "raw, through the unembedding"
    return _box(f"value vector of layer {result.layer}, neuron {result.neuron} ({result.model})",
                f"<p>norm {result.norm:.3f}; {how}</p>",
                _figure(token_logits_figure([t.token for t in result.top], [t.logit for t in result.top],
                                            "top tokens")))


def edit_projection_html(result) -> str:
    from kelocate.plots.html import table
    from kelocate.plots.projection import projection_hits_figure
    from kelocate.probes.projection import summarise

    head = result.headline
    ks = [str(k) for k in result.ks]
    summary = summarise([result], result.ks)
    rows = []
    for which, label in (("top", "top dW columns"), ("random", "random columns")):
        for when in ("before", "after"):
            rows.append([f"{label}, {'W' if when == 'before' else 'W' + chr(39)}",
                         *(f"{summary[which][when]['any'][k]:.0%}" for k in ks)])
    rows.append([f"base rate (any of {result.n_columns}), W'",
                 *(f"{summary['base']['after']['any_of'][k]:.0%}" for k in ks)])
    columns = [[str(c), " ".join(head.tokens["before"][i][:6]), " ".join(head.tokens["after"][i][:6])]
               for i, c in enumerate(head.columns)]
    return _box(f"{result.method} edit projected into the vocabulary, layer {result.layer} ({result.model})",
                _figure(projection_hits_figure({result.method: summary}, ks=result.ks[-2:])),
                table(["columns", *(f"Hit@{k}" for k in ks)], rows, "the new target's first token"),
                table(["column", "top tokens in W", "top tokens in W'"], columns))


def sparsity_html(result) -> str:
    from kelocate.plots.html import table
    from kelocate.plots.inline import cumulative_mass_figure

    masses = {p.name.removeprefix("model.").removesuffix(".weight"): p.column_energy for p in result.parameters}
    rows = [[p.name, "x".join(map(str, p.shape)), f"{p.columns.top5_share:.3f}" if p.columns.top5_share is not None
             else "-", f"{p.columns.participation_ratio:.1f} / {p.columns.n}" if p.columns.participation_ratio
             else "-", str(p.rank.rank)] for p in result.parameters]
    return _box(f"sparsity of a {result.method} edit",
                _figure(cumulative_mass_figure(masses, "mass over sorted value columns")),
                table(["parameter", "shape", "top-5 share", "participation ratio", "rank"], rows))


VIEWS: dict[str, Any] = {"trace": trace_html, "edit": record_html, "value_projection": value_projection_html,
                         "edit_projection": edit_projection_html, "sparsity": sparsity_html}
for _kind, _view in VIEWS.items():
    display.register(_kind, _view)
