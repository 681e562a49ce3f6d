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

# the int8 dot-product instructions whose presence changes int8 speedups most
INT8_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


def cpu_model() -> str:
    """The CPU's model name, family and model numbers and int8 instructions (Linux), else the
    architecture: int8 speedups depend on them, and a model name such as "AMD EPYC" alone
    does not tell two generations apart."""
    try:
        info: dict[str, str] = {}
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())
    except OSError:
        info = {}
    if "model name" not in info:
        return platform.processor() or platform.machine()
    flags = set(info.get("flags", "").split())
    int8 = [f for f in INT8_FLAGS if f in flags] or ["no VNNI"]
    return (
        f"{info['model name']} (family {info.get('cpu family', '?')}, model "
        f"{info.get('model', '?')}; {', '.join(int8)})"
    )


def machine(device: str = "cpu") -> str:
    """ "<CPU model>, <threads> threads, torch <version>[, <GPU name>]" for the results file."""
    text = f"{cpu_model()}, {torch.get_num_threads()} threads, torch {torch.__version__}"
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


RECIPE_HELP = (
    "Recipe overrides FIELD=VALUE, e.g. recovery_steps=600 recovery_layer_distill=1 "
    "(max_train_examples=none: the whole training set)"
)


def recipe_overrides(pairs: list[str]) -> dict[str, Any]:
    """`--recipe FIELD=VALUE ...` as Recipe keyword arguments, typed like the fields (ValueError
    naming the pair for an unknown field)."""
    from autoprumux.config import Recipe

    defaults = Recipe()
    out: dict[str, Any] = {}
    for kv in pairs:
        k, _, v = kv.partition("=")
        if not hasattr(defaults, k):
            raise ValueError(f"--recipe {kv}: Recipe has no field {k!r}")
        field_type = type(getattr(defaults, k))
        if v.lower() == "none":
            out[k] = None
        elif field_type is bool:
            out[k] = v.lower() in ("1", "true", "yes")
        else:
            out[k] = field_type(v)
    return out
