"""The baseline's outputs over the training set, computed once per model, task and recipe and
cached beside it, so a distilling step runs only the model it trains: its logits (any
distillation) and its per-layer token states (layer distillation)."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors.torch import load_file, save_file

from autoprumux.training import TeacherLayers, predict, write_teacher_layers

if TYPE_CHECKING:
    from autoprumux.pipeline._pipeline import PruMuxPipeline

log = logging.getLogger("autoprumux")


def teacher_logits(pipe: PruMuxPipeline) -> torch.Tensor | None:
    """The baseline's logits for every training item (None when the recipe does not distil, or
    trains with L2L, whose executor runs the teacher itself)."""
    if not pipe.recipe.distill_weight or pipe.recipe.trainer == "l2l":
        return None
    if pipe._teacher_logits is None:

        def build(tmp: Path) -> dict:
            t0 = time.perf_counter()
            logits = predict(pipe.baseline(), pipe.train_items, device=pipe.device)
            save_file({"logits": logits.float().cpu()}, tmp / "logits.safetensors")
            return {"items": len(pipe.train_items), "seconds": time.perf_counter() - t0}

        entry, hit = pipe.cache.get_or_build("teacher", {**pipe._key(), "of": "logits"}, build)
        log.info("teacher logits %s (%s)", "cache hit" if hit else "computed", entry)
        pipe._teacher_logits = load_file(entry / "logits.safetensors")["logits"]
    return pipe._teacher_logits


def teacher_layers(pipe: PruMuxPipeline) -> TeacherLayers | None:
    """The baseline's per-layer token states for every training item (fp16, memory-mapped:
    about 50 KB per item and layer at 64 tokens; see `write_teacher_layers`). None unless the
    recipe distils layers (`recovery_layer_distill`) and has the logits table."""
    if not pipe.recipe.recovery_layer_distill or teacher_logits(pipe) is None:
        return None
    if pipe._teacher_layers is None:

        def build(tmp: Path) -> dict:
            t0 = time.perf_counter()
            shape = write_teacher_layers(pipe.baseline(), pipe.train_items, tmp, device=pipe.device)
            return {**shape, "seconds": time.perf_counter() - t0}

        entry, hit = pipe.cache.get_or_build("teacher", {**pipe._key(), "of": "layers"}, build)
        log.info("teacher layer states %s (%s)", "cache hit" if hit else "computed", entry)
        pipe._teacher_layers = TeacherLayers(entry)
    return pipe._teacher_layers
