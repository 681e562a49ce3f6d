"""What every benchmark script records with its results: the machine, and the JSON file itself.

Imported by the scripts in this folder as `from _results import machine, write_json` (a script's
own folder is first on `sys.path` when it runs as `python benchmarks/<script>.py`).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def machine(device: str = "cpu") -> str:
    """Where the results were measured: the CPU model, its id and int8 instructions, threads,
    GPU (CUDA), torch and autoprumux versions (`autoprumux.evaluation.Machine.describe`)."""
    from autoprumux.evaluation import this_machine

    return this_machine(device).describe()


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
    from dataclasses import fields

    from autoprumux.config import Recipe

    kinds = {f.name: f.metadata["rule"].kind for f in fields(Recipe)}  # a field's type
    out: dict[str, Any] = {}
    for kv in pairs:
        k, _, v = kv.partition("=")
        if k not in kinds:
            raise ValueError(f"--recipe {kv}: Recipe has no field {k!r}")
        field_type = kinds[k]
        if v.lower() == "none":
            out[k] = None
        elif field_type is bool:
            out[k] = v.lower() in ("1", "true", "yes")
        else:
            out[k] = field_type(v)
    return out
