"""Notebooks: the results show themselves inline (a figure and the key numbers), and the tutorial notebook in
examples/ runs from top to bottom in a real Jupyter kernel (nbclient), its outputs holding those views."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

import kelocate
from kelocate.probes.projection import project_edit, project_value
from kelocate.probes.sparsity import sparsity

TUTORIAL = Path(__file__).resolve().parents[1] / "examples" / "tutorial.ipynb"


def _png_count(html: str) -> int:
    """How many embedded PNGs the HTML holds, each checked to decode to a PNG."""
    parts = html.split('src="data:image/png;base64,')[1:]
    for part in parts:
        assert base64.b64decode(part.split('"', 1)[0])[:8] == b"\x89PNG\r\n\x1a\n"
    return len(parts)


def test_results_show_a_figure_and_their_numbers(organism):
    result = kelocate.trace(organism, "SMAP was created in", samples=2)
    view = result._repr_html_()
    assert _png_count(view) == len(result.base_kinds) and "SMAP was created in" in view and "top layers" in view
    record = kelocate.locate_and_edit(organism, kelocate.editor("rome"), kelocate.EditRequest(
        "SMAP was created in", "SMAP", "France"))
    try:
        view = record._repr_html_()
        assert _png_count(view) == 1 and "applied" in view and "France" in view and "down_proj" in view
        projected = project_edit(organism, record)
        view = projected._repr_html_()
        assert _png_count(view) == 1 and "Hit@50" in view and "random columns" in view
        view = sparsity(record)._repr_html_()
        assert _png_count(view) == 1 and "participation ratio" in view
        view = project_value(organism, projected.layer, projected.headline.columns[0])._repr_html_()
        assert _png_count(view) == 1 and f"neuron {projected.headline.columns[0]}" in view
    finally:
        record.revert()
    assert "not applied" in record._repr_html_()


def test_tutorial_notebook_runs(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    notebook = nbformat.read(TUTORIAL, as_version=4)
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "2"))  # the kernel inherits these
    monkeypatch.setenv("MPLBACKEND", "Agg")
    client = nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError on the first failing cell
    html = [o["data"]["text/html"] for c in notebook.cells if c.cell_type == "code" for o in c.get("outputs", [])
            if "text/html" in o.get("data", {})]
    assert len(html) == 5  # trace, edit record, edit projection, sparsity, value projection
    assert all(_png_count(h) >= 1 for h in html)
