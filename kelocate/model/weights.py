"""Named access to the weights editors and probes use, bit-exact snapshots, and the model's fingerprint.

Accessors return the live `nn.Parameter`s of the wrapped HF model (the bridge shares them), in HF's
[out_features, in_features] layout:

- `mlp_out(model, l)`: `down_proj.weight` [d_model, d_mlp], the value matrix key-value editors write; its
  column i is the value vector of neuron i.
- `mlp_in(model, l)`: `{"gate": gate_proj.weight, "up": up_proj.weight}` [d_mlp, d_model] each.
- `attn_out(model, l)`: `o_proj.weight` [d_model, n_heads * head_dim].
- `embedding(model)`: W_E [vocab, d_model]; `unembedding(model)`: the raw LM head [vocab, d_model]
  (no final norm: embedding-space projection multiplies by it directly).

`snapshot(model, names)` copies parameters; `restore(model, snap)` writes the copies back, so the
weights are bit-identical afterwards (subtracting a delta in float would not be).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

import torch

from kelocate.errors import KelocateError

_MLP_OUT = "model.layers.{l}.mlp.down_proj.weight"
_MLP_GATE = "model.layers.{l}.mlp.gate_proj.weight"
_MLP_UP = "model.layers.{l}.mlp.up_proj.weight"
_ATTN_OUT = "model.layers.{l}.self_attn.o_proj.weight"


def canonical(name: str) -> str:
    """HF's own name of a parameter: the bridge wraps modules, so `named_parameters()` of the bridged model
    reads 'model.layers.0._original_component.mlp._original_component.down_proj._original_component.weight'
    where HF says 'model.layers.0.mlp.down_proj.weight'. Editors and records use HF's names."""
    return name.replace("._original_component", "").replace("_original_component.", "")


def parameter(model, name: str) -> torch.nn.Parameter:
    """The live parameter of the wrapped HF model under its HF name (e.g. 'model.layers.3.mlp.down_proj.weight')."""
    try:
        return model.hf.get_parameter(name)
    except AttributeError:
        raise KelocateError(
            f"the model has no parameter {name!r}; see weights.parameter_names(model) for its names") from None


_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.")


def layer_of(name: str) -> int | None:
    """The block number in an HF parameter name ('model.layers.5.mlp.down_proj.weight' -> 5), None if none."""
    found = _LAYER.search(name)
    return int(found.group(1)) if found else None


def mlp_out_name(layer: int) -> str:
    """HF name of layer `layer`'s down_proj weight (the MLP value matrix)."""
    return _MLP_OUT.format(l=int(layer))


def mlp_out(model, layer: int) -> torch.nn.Parameter:
    """down_proj.weight [d_model, d_mlp] of `layer`: the values key-value editors write and neuron edits change."""
    return parameter(model, mlp_out_name(model.check_layer(layer)))


def mlp_in(model, layer: int) -> dict[str, torch.nn.Parameter]:
    """gate_proj and up_proj weights [d_mlp, d_model] of `layer` (the keys' inputs)."""
    layer = model.check_layer(layer)
    return {"gate": parameter(model, _MLP_GATE.format(l=layer)), "up": parameter(model, _MLP_UP.format(l=layer))}


def attn_out(model, layer: int) -> torch.nn.Parameter:
    """o_proj.weight [d_model, heads * head_dim] of `layer`."""
    return parameter(model, _ATTN_OUT.format(l=model.check_layer(layer)))


def embedding(model) -> torch.nn.Parameter:
    """Token embeddings W_E [vocab, d_model]."""
    return model.hf.get_input_embeddings().weight


def unembedding(model) -> torch.nn.Parameter:
    """The raw LM head [vocab, d_model] (tied models share it with W_E); no final norm is applied."""
    return model.hf.get_output_embeddings().weight


def parameter_names(model) -> list[str]:
    """Every parameter's HF name (tied weights once)."""
    return [canonical(name) for name, _ in model.hf.named_parameters()]


# ---------------------------------------------------------------------- snapshot / restore
def snapshot(model, names: Iterable[str]) -> dict[str, torch.Tensor]:
    """Copies of the named parameters (cloned, same dtype and device)."""
    return {name: parameter(model, name).detach().clone() for name in dict.fromkeys(names)}


@torch.no_grad()
def restore(model, snap: dict[str, torch.Tensor]) -> None:
    """Write snapshot values back in place: afterwards those parameters are bit-identical to the snapshot."""
    for name, value in snap.items():
        param = parameter(model, name)
        if param.shape != value.shape or param.dtype != value.dtype:
            raise KelocateError(
                f"snapshot of {name!r} is {tuple(value.shape)} {value.dtype}, the model has "
                f"{tuple(param.shape)} {param.dtype}; it belongs to another model")
        param.copy_(value)


def state_hash(model) -> str:
    """SHA-256 of every parameter's bytes in name order: equal hashes mean bit-identical weights."""
    h = hashlib.sha256()
    for name, param in sorted(model.hf.state_dict().items()):
        h.update(canonical(name).encode())
        h.update(param.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


# ---------------------------------------------------------------------- fingerprint
def fingerprint_of(model, sample: int = 4096) -> str:
    """A short key of the model's identity for caches and edit records.

    Made of the architecture (type and sizes), the dtype, where it came from (hub revision or GGUF file
    size) and a strided sample of every parameter's values as loaded. Two loads of the same weights agree;
    another model, dtype or revision gives another key. It is computed once, at load, so an edit applied
    afterwards does not change it.
    """
    config = model.hf.config
    h = hashlib.sha256()
    dims = (getattr(config, "model_type", ""), getattr(config, "num_hidden_layers", None),
            getattr(config, "hidden_size", None), getattr(config, "intermediate_size", None),
            getattr(config, "vocab_size", None))
    h.update(repr(dims).encode())
    h.update(repr(sorted((k, str(v)) for k, v in model.source.items() if k in ("revision", "file_size"))).encode())
    with torch.no_grad():
        for name, param in model.hf.named_parameters():
            flat = param.detach().reshape(-1)
            step = max(1, flat.numel() // sample)
            h.update(canonical(name).encode())
            h.update(str(param.dtype).encode())
            h.update(flat[::step].float().cpu().numpy().tobytes())
    return h.hexdigest()[:24]
