"""The model organism: a synthetic world (knowledge graph) and a small Llama trained on it."""

from __future__ import annotations

from pathlib import Path


def checkpoint_dir() -> Path:
    """Where the shipped organism checkpoint lives inside the package."""
    return Path(__file__).resolve().parent / "checkpoint"
