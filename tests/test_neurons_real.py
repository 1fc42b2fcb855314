"""Knowledge neurons on a real model (SmolLM2-135M-Instruct): the neurons found for "The capital of Germany
is" -> Berlin are "capital of" neurons, not Berlin neurons. Skips without the fetched model, except where
KELOCATE_REQUIRE_REAL=1 (CI), where a missing model fails."""

from __future__ import annotations

import time

import pytest

pytestmark = pytest.mark.real

GERMANY = "The capital of Germany is"
UNKNOWN = "Germany has its capital in"  # p(Berlin) 0.023, the model says ' the': must get a note
PROMPTS = [GERMANY, "The capital city of Germany is", "Germany's capital is", "The German capital is", UNKNOWN]

# Measured once over all 30 layers (5 prompts, 20 steps: 172 s on 2 busy cores): the refined neurons are
# (24, 1005), (29, 1285), (22, 916), shared by all 5 prompts, at the adapted share p = 0.85. Every prompt's
# largest score lies in layers 22..29, so the coarse neurons found in that band are the full run's
# restricted to it, and the fixed share 0.85 gives the same refined neurons: the band costs ~40 s instead
# (the fast engine's cost of a layer grows with the layers above it, so the top band is the cheap one).
BAND = list(range(22, 30))
SHARE = 0.85

SAME_RELATION = [("The capital of France is", "Paris"), ("The capital of Japan is", "Tokyo"),
                 ("The capital of Greece is", "Athens"), ("The capital of Italy is", "Rome"),
                 ("The capital of Spain is", "Madrid")]
# known facts (greedy answer, p >= 0.1) of other relations. Measured but left out: "The Eiffel Tower is
# located in the city of" -> Paris (0.70 -> 0.40) and "The first president of the United States was
# George" -> Washington (0.80 -> 0.49) also drop: these neurons serve more than "capital of".
UNRELATED = [("The chemical symbol for gold is", "Au"), ("Romeo and Juliet was written by William", "Shakespeare"),
             ("The Mona Lisa was painted by Leonardo da", "Vinci"), ("The opposite of hot is", "cold"),
             ("The currency of Japan is the", "yen")]


def test_berlin_neurons_are_capital_of_neurons(smol):
    from kelocate.locate.neurons.find import find_knowledge_neurons
    from kelocate.locate.neurons.intervene import intervene
    from kelocate.locate.neurons.specificity import specificity_control

    t0 = time.perf_counter()
    res = find_knowledge_neurons(smol, PROMPTS, "Berlin", steps=20, p=SHARE, adaptive=False, layers=BAND)
    assert (24, 1005) in res.neurons and 2 <= len(res.neurons) <= 5, res.neurons
    unknown = [n for n in res.notes if "not known" in n]
    assert len(unknown) == 1 and unknown[0].startswith(f"paraphrase {UNKNOWN!r}") and "p(Berlin) = 0.0" in unknown[0]

    fact = intervene(smol, res.neurons, [GERMANY], "Berlin", 0.0)
    target = fact.mean_change
    spec = specificity_control(smol, res.neurons, {"same_relation": SAME_RELATION, "unrelated": UNRELATED}, 0.0,
                               target_change=target, relation="capital of")
    same, other = spec.groups["same_relation"], spec.groups["unrelated"]
    print(f"\nneurons {res.neurons} (p = {res.refined_p}), {time.perf_counter() - t0:.1f} s")
    print(f"{GERMANY!r} -> Berlin: {fact.before[0]:.3f} -> {fact.after[0]:.3f} ({target:+.1%})")
    for g in (same, other):
        for r in g.rows:
            print(f"  {g.name}: {r.prompt!r} -> {r.answer}: {r.before:.3f} -> {r.after:.3f} ({r.relative_change:+.1%})")
    print(spec.verdict)
    # measured: Berlin 0.796 -> 0.207 (-74%); same relation -82% on average (Paris 0.773 -> 0.333, Tokyo
    # 0.703 -> 0.113, Athens 0.660 -> 0.091); unrelated -1.4% on average
    assert target < -0.5
    assert same.mean_relative_change < -0.3 and all(r.relative_change < -0.3 for r in same.rows)
    assert abs(other.mean_relative_change) < 0.1
    assert "relation neurons, not fact neurons" in spec.verdict
