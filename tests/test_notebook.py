"""The walkthrough notebook executes top to bottom (on a tiny random BERT to stay fast)."""

from __future__ import annotations

from pathlib import Path

from conftest import GLUE_DIR as DATA

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "walkthrough.ipynb"


def test_walkthrough_notebook_runs(tiny_checkpoint, tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("WALKTHROUGH_MODEL", tiny_checkpoint)
    monkeypatch.setenv("WALKTHROUGH_TRIALS", "4")
    monkeypatch.setenv("WALKTHROUGH_DIR", str(tmp_path))
    monkeypatch.setenv("AUTOPRUMUX_DATA", str(DATA))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(
        nb,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    ).execute()
    outputs = "".join(
        o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
    )
    assert "best within 5 points" in outputs and "meta-model (" in outputs
    # the recommendation is a measured configuration, or the baseline by definition
    assert "measured (trial" in outputs or "by definition" in outputs
    images = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(images) >= 2  # the Pareto front and the predicted-vs-measured plots
    assert (tmp_path / "autoprumux.db").is_file() and (tmp_path / "mlruns" / "mlflow.db").is_file()
