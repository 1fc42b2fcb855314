"""The corruption of causal tracing: noise specs, the subject-embedding sigma (cached), paired noise draws.

ROME corrupts the subject's token embeddings with Gaussian noise of scale 3 sigma, where sigma is the
standard deviation of the token embeddings of a set of subjects. Spec strings accepted here:

- ``"3sigma"`` (any multiplier: ``"2.5sigma"``): Gaussian, scale = multiplier x sigma
- ``"0.1"`` (a float): Gaussian with that absolute scale
- ``"uniform"``: uniform on [-1, 1] x 3 sigma; ``"uniform:2sigma"`` / ``"uniform:0.5"`` set the scale

A sigma is cached on disk like every kelocate cache (`atomic.keyed_path`): keyed on the model's fingerprint
and the exact subject list, with the key stored in the entry and checked when it is read back.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass

import torch

from kelocate.atomic import keyed_path, same_key, write_text
from kelocate.errors import KelocateError

# Subjects for sigma on models other than the organism (common entity names, as in fact data sets).
COMMON_SUBJECTS = (
    "Paris",
    "London",
    "Tokyo",
    "Berlin",
    "Rome",
    "Moscow",
    "Cairo",
    "Sydney",
    "Toronto",
    "Mumbai",
    "France",
    "Germany",
    "Japan",
    "Brazil",
    "Canada",
    "India",
    "China",
    "Italy",
    "Spain",
    "Mexico",
    "Albert Einstein",
    "Marie Curie",
    "Barack Obama",
    "William Shakespeare",
    "Leonardo da Vinci",
    "Napoleon Bonaparte",
    "Isaac Newton",
    "Wolfgang Amadeus Mozart",
    "Pablo Picasso",
    "Charles Darwin",
    "Microsoft",
    "Toyota",
    "Nokia",
    "Google",
    "Apple",
    "Sony",
    "Samsung",
    "IBM",
    "BMW",
    "Nintendo",
    "the Eiffel Tower",
    "the Amazon River",
    "Mount Everest",
    "the Great Wall of China",
    "the Colosseum",
    "the Beatles",
    "Real Madrid",
    "Manchester United",
    "the New York Times",
    "Harvard University",
    "Windows 10",
    "the iPhone",
    "Python",
    "Linux",
    "Wikipedia",
    "Netflix",
    "Coca-Cola",
    "Airbus",
    "Danielle Darrieux",
    "Edwin of Northumbria",
    "Toko Yasuda",
    "Autonomous University of Madrid",
)


@dataclass(frozen=True)
class NoiseSpec:
    """A parsed noise option: distribution and a scale, either absolute or a multiple of sigma."""

    distribution: str  # "gaussian" | "uniform"
    value: float  # the multiplier (relative) or the absolute scale
    relative: bool  # True: scale = value x sigma

    @property
    def text(self) -> str:
        scale = f"{self.value:g}sigma" if self.relative else f"{self.value:g}"
        return scale if self.distribution == "gaussian" else f"uniform:{scale}"


_SIGMA = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)?\s*sigma\s*$", re.IGNORECASE)


def _parse_scale(text: str) -> tuple[float, bool]:
    match = _SIGMA.match(text)
    if match:
        return float(match.group(1) or 1.0), True
    try:
        return float(text), False
    except ValueError:
        raise KelocateError(
            f"bad noise {text!r}; use 3sigma, a multiple like 2.5sigma, a float scale like 0.1, "
            "or uniform[:SCALE]"
        ) from None


def parse_noise(noise: str | float | NoiseSpec) -> NoiseSpec:
    """Read a noise option ('3sigma', 0.1, 'uniform', 'uniform:2sigma'); a bad one is a KelocateError."""
    if isinstance(noise, NoiseSpec):
        spec = noise
    elif isinstance(noise, int | float):
        spec = NoiseSpec("gaussian", float(noise), False)
    else:
        text = str(noise).strip()
        dist = "gaussian"
        if text.lower().startswith("uniform"):
            dist, text = "uniform", text[len("uniform") :].lstrip(":").strip() or "3sigma"
        elif text.lower().startswith("gaussian"):
            text = text[len("gaussian") :].lstrip(":").strip() or "3sigma"
        value, relative = _parse_scale(text)
        spec = NoiseSpec(dist, value, relative)
    if not spec.value > 0 or spec.value != spec.value or spec.value == float("inf"):
        raise KelocateError(f"bad noise scale {spec.value!r}; it must be a positive finite number")
    return spec


def draw_noise(samples: int, n_tokens: int, width: int, distribution: str, seed: int) -> torch.Tensor:
    """Unit noise [samples, n_tokens, width] (float32, CPU) from a private seeded generator.

    The same seed gives the same draws, so every grid cell of a trace sees the same corruption (paired).
    """
    gen = torch.Generator().manual_seed(int(seed))
    if distribution == "uniform":
        return torch.rand(samples, n_tokens, width, generator=gen) * 2 - 1
    return torch.randn(samples, n_tokens, width, generator=gen)


# ---------------------------------------------------------------------- sigma of subject embeddings
def default_subjects(model) -> tuple[list[str], str]:
    """(subjects, source): the model's known entity names (the organism's world), else COMMON_SUBJECTS."""
    names = sorted(set(model.entity_names))
    if names:
        return names, "known entities"
    return list(COMMON_SUBJECTS), "built-in common subjects"


def sigma_key(model, subjects: list[str]) -> dict[str, str]:
    """The cache key of a sigma: the model's weights (fingerprint) and the exact subject list (its digest)."""
    return {"format": "kelocate-noise-sigma", "model": model.fingerprint,
            "subjects": hashlib.sha256("\n".join(subjects).encode()).hexdigest()}


@torch.no_grad()
def embedding_sigma(model, subjects: list[str] | None = None) -> float:
    """Std of all token-embedding entries of `subjects` (each tokenized alone), computed once and cached."""
    source = "given"
    if subjects is None:
        subjects, source = default_subjects(model)
    subjects = [s for s in subjects if s and s.strip()]
    if not subjects:
        raise KelocateError("no subjects to estimate the noise scale from; pass a float noise scale instead")
    key = sigma_key(model, subjects)
    path = keyed_path("noise_sigma", key, ".json")
    if path.is_file():
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
            if same_key(stored.get("key"), key):
                return float(stored["sigma"])
        except (ValueError, KeyError, OSError, AttributeError, TypeError):
            pass  # a damaged or foreign cache entry is recomputed
    ids = [model.encode(s, special=False).ids for s in subjects]
    embed = model.hf.get_input_embeddings()
    vectors = embed(torch.cat(ids).to(model.device)).float()
    sigma = float(vectors.std())
    write_text(
        path,
        json.dumps(
            {
                "key": key,
                "sigma": sigma,
                "model": model.name,
                "subjects": len(subjects),
                "source": source,
                "tokens": int(vectors.shape[0]),
            }
        ),
    )
    return sigma
