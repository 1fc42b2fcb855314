"""Editors' hyper-parameters: small per-model TOML files, resolved once per edit and saved with the record.

`configs/<profile>.toml` holds one table per method (`[rome]`, `[memit]`, ...). The profile comes from the
model: the organism, SmolLM2-135M, Llama-2-7B (the published values), or `generic` for anything else,
where layers are written as fractions of the depth and scaled to the model. A user's own TOML file
(`config_file=`, `--config`) and keyword overrides go on top, in that order.

The edit position (`token`) is named as causal tracing names it: 'last_subject' or 'last'
(`kelocate.edit.keys`). The editors' configs once spelled the first 'subject_last'; a user's file may still
say so, and it is read as 'last_subject' here (`OLD_TOKENS`), the one place that knows that spelling.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from kelocate.errors import KelocateError

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
PROFILES = ("organism", "smollm2-135m", "llama-2-7b", "generic")
OLD_TOKENS = {"subject_last": "last_subject"}  # an old spelling of `token` in a user's file -> the name now


def profile_of(model) -> str:
    """Which shipped hyper-parameter file fits `model`."""
    if model.provenance.is_organism:
        return "organism"
    where = f"{model.name} {model.path or ''} {model.source.get('file', '')}".lower()
    if "smollm2" in where and model.n_layers == 30:
        return "smollm2-135m"
    if "llama-2-7b" in where or "llama2-7b" in where:
        return "llama-2-7b"
    return "generic"


def _read(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise KelocateError(f"config file {str(path)!r} does not exist; pass an existing TOML file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise KelocateError(f"config file {str(path)!r} is not valid TOML ({exc}); fix it") from None


def _scale_layers(value: Any, n_layers: int) -> Any:
    """Layers given as fractions of the depth (generic profile) become layer numbers of this model."""
    if isinstance(value, float):
        return min(n_layers - 1, max(0, round(value * (n_layers - 1))))
    if isinstance(value, list):
        return sorted(dict.fromkeys(_scale_layers(v, n_layers) for v in value))
    return value


def _check_value(method: str, key: str, value: Any, shipped: Any, source: str) -> Any:
    """A user's value must have the shipped value's type (numbers may be int or float; layers are ints)."""
    where = f"{method} setting {key!r} in the {source}"
    if key == "layers":
        items = value if isinstance(value, list) else [value]
        if not items or not all(isinstance(v, int) and not isinstance(v, bool) for v in items):
            raise KelocateError(f"{where} must be a layer number or a list of them, got {value!r}")
        return value
    if isinstance(shipped, bool) or isinstance(value, bool):
        ok = isinstance(value, bool) and isinstance(shipped, bool) or (
            key == "norm_constraint" and isinstance(value, (bool, int, float)))
    elif isinstance(shipped, (int, float)):
        ok = isinstance(value, (int, float))
    else:
        ok = isinstance(value, type(shipped))
    if not ok:
        kind = "a number or false" if key == "norm_constraint" else type(shipped).__name__
        raise KelocateError(f"{where} must be {kind}, got {value!r}")
    if key in ("v_num_grad_steps", "steps") and value < 1:
        raise KelocateError(f"{where} must be at least 1, got {value!r}")
    return value


def resolve(method: str, model, config_file: str | Path | None = None,
            overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The hyper-parameters `method` uses on `model`: shipped profile < user file < overrides.

    Unknown keys or tables in the user's file, and values of the wrong type, are errors (a misspelt key
    would be silently ignored, a wrong type would fail minutes later)."""
    profile = profile_of(model)
    shipped = _read(CONFIG_DIR / f"{profile}.toml")
    if method not in shipped:
        raise KelocateError(f"no {method!r} settings in the {profile} profile; known methods: "
                            f"{', '.join(sorted(shipped))}")
    resolved = dict(shipped[method])
    scaled = "layers" in resolved and any(isinstance(v, float) for v in (
        resolved["layers"] if isinstance(resolved["layers"], list) else [resolved["layers"]]))
    if "layers" in resolved:
        resolved["layers"] = _scale_layers(resolved["layers"], model.n_layers)
    user = _read(Path(config_file)) if config_file else {}
    unknown_tables = sorted(set(user) - set(shipped))
    if unknown_tables:
        raise KelocateError(f"unknown table [{unknown_tables[0]}] in config file {str(config_file)!r}; tables "
                            f"are method names: {', '.join(sorted(shipped))}")
    for source, values in (("config file", user.get(method, {})), ("override", overrides or {})):
        if not isinstance(values, dict):
            raise KelocateError(f"[{method}] in the {source} must be a table of settings, got {values!r}")
        unknown = sorted(set(values) - set(resolved))
        if unknown:
            raise KelocateError(f"unknown {method} setting {unknown[0]!r} in the {source}; known settings: "
                                f"{', '.join(sorted(resolved))}")
        resolved |= {k: _check_value(method, k, v, shipped[method][k], source)
                     for k, v in values.items() if v is not None}
    if "token" in resolved:  # one vocabulary with tracing
        from kelocate.edit.keys import edit_token

        resolved["token"] = edit_token(OLD_TOKENS.get(resolved["token"], resolved["token"]))
    resolved["profile"] = profile
    if scaled and resolved["layers"] == _scale_layers(shipped[method]["layers"], model.n_layers):
        resolved["layers_from_depth_fraction"] = True
    return resolved
