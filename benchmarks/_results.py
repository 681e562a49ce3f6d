"""What every benchmark script records with its results: the machine, and the JSON file itself.

Imported by the scripts in this folder as `from _results import machine, write_json` (a script's
own folder is first on `sys.path` when it runs as `python benchmarks/<script>.py`).
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
from pathlib import Path
from typing import Any

import torch


def machine(device: str = "cpu") -> str:
    """ "<processor>, <threads> threads, torch <version>[, <GPU name>]" for the results file."""
    text = (
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}"
    )
    if device.startswith("cuda"):
        text += f", {torch.cuda.get_device_name(torch.device(device))}"
    return text


def write_json(path: str | os.PathLike[str], doc: Any) -> Path:
    """Write `doc` as indented JSON to `path` through a temporary file in the same folder and a
    rename, so a run killed mid-write leaves the previous file (or none), never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f, indent=2)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
