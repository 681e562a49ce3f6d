"""One on-disk layout for every autoprumux model: safetensors weights + a JSON config."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

CONFIG_FILE = "autoprumux_config.json"
WEIGHTS_FILE = "model.safetensors"


def write_model_dir(
    module: torch.nn.Module, directory: str | Path, cfg: dict[str, Any], extra: dict | None
) -> Path:
    """Write `module`'s state dict and `cfg` (+ `extra` under "extra") into `directory`."""
    from safetensors.torch import save_file

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    if extra:
        cfg = {**cfg, "extra": extra}
    sd = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
    save_file(sd, str(d / WEIGHTS_FILE))
    (d / CONFIG_FILE).write_text(json.dumps(cfg, indent=2))
    return d


def read_model_dir(
    directory: str | Path, map_location: str = "cpu"
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(config, state dict) of a model directory written by `write_model_dir`."""
    from safetensors.torch import load_file

    d = Path(directory)
    cfg_path = d / CONFIG_FILE
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{str(d)!r} holds no autoprumux model (no {CONFIG_FILE})")
    return json.loads(cfg_path.read_text()), load_file(str(d / WEIGHTS_FILE), device=map_location)
