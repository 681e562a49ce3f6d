"""The benchmark scripts' shared results helper, and every script's command line (`--help`)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
SCRIPTS = sorted(p for p in BENCH.glob("*.py") if not p.name.startswith("_"))


def _results_module():
    spec = importlib.util.spec_from_file_location("_results", BENCH / "_results.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_machine_names_threads_and_torch():
    text = _results_module().machine("cpu")
    assert f"{torch.get_num_threads()} threads" in text
    assert f"torch {torch.__version__}" in text


def test_write_json_replaces_whole_file_and_keeps_old_one_on_failure(tmp_path):
    results = _results_module()
    out = tmp_path / "deeper" / "r.json"
    results.write_json(out, {"rows": [1, 2]})
    assert json.loads(out.read_text()) == {"rows": [1, 2]}
    results.write_json(out, {"rows": [3]})
    assert json.loads(out.read_text()) == {"rows": [3]}
    with pytest.raises(TypeError):
        results.write_json(out, {"rows": [object()]})  # not JSON: fails half-way through dumping
    assert json.loads(out.read_text()) == {"rows": [3]}  # the previous file is intact
    assert [p.name for p in out.parent.iterdir()] == ["r.json"]  # no temporary file left


@pytest.mark.parametrize("script", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_script_help(script):
    """Each script parses its command line before any work: `--help` prints usage, exit 0."""
    r = subprocess.run(
        [sys.executable, str(script), "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert "usage:" in r.stdout
