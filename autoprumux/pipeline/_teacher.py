"""The baseline's outputs over the training set, computed once per model, task and recipe and
cached beside it, so a distilling step runs only the model it trains: its logits (any
distillation) and its per-layer token states (layer distillation); and the pruning recovery's
training set, which may add unlabeled sentences distilled from those outputs alone."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors.torch import load_file, save_file

from autoprumux.config import Recipe
from autoprumux.data import UNLABELED, Encoded, encode_corpus, warmup_texts
from autoprumux.training import TeacherLayers, predict, write_teacher_layers

if TYPE_CHECKING:
    from autoprumux.pipeline._pipeline import PruMuxPipeline

log = logging.getLogger("autoprumux")


def distils_from_tables(r: Recipe) -> bool:
    """Whether the recipe's distilling steps read the cached tables (the L2L executor runs the
    teacher itself)."""
    return bool(r.distill_weight) and r.trainer != "l2l"


def teacher_logits(pipe: PruMuxPipeline) -> torch.Tensor | None:
    """The baseline's logits for every training item (None when the recipe does not distil, or
    trains with L2L, whose executor runs the teacher itself)."""
    if not distils_from_tables(pipe.recipe):
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


def unlabeled_items(pipe: PruMuxPipeline) -> tuple[list[Encoded], dict]:
    """`recovery_unlabeled` sentences of the warm-up corpus (a seeded sample, see
    `warmup_texts`), tokenised as UNLABELED items, and what keys them (their count and content
    hash; empty when the recipe adds none, or does not distil: they would have nothing to
    learn from)."""
    r = pipe.recipe
    if not r.recovery_unlabeled or not distils_from_tables(r):
        return [], {}
    if pipe._unlabeled is None:
        texts = warmup_texts(
            pipe.warmup_corpus, pipe.data, pipe.data_dir, r.recovery_unlabeled, r.seed
        )
        items, digest = encode_corpus(texts, pipe.tokenizer, r.max_seq_len)
        pipe._unlabeled = (
            [Encoded(x.input_ids, x.token_type_ids, UNLABELED) for x in items],
            {"unlabeled": len(items), "unlabeled_corpus": digest},
        )
    return pipe._unlabeled


def recovery_set(pipe: PruMuxPipeline) -> tuple[list[Encoded], torch.Tensor | None]:
    """The pruning recovery's training items (the task's, then the unlabeled ones) and the
    baseline's logits for each (None when the recipe does not distil)."""
    table = teacher_logits(pipe)
    extra, key = unlabeled_items(pipe)
    if table is None or not extra:
        return list(pipe.train_items), table

    def build(tmp: Path) -> dict:
        t0 = time.perf_counter()
        logits = predict(pipe.baseline(), extra, device=pipe.device)
        save_file({"logits": logits.float().cpu()}, tmp / "logits.safetensors")
        return {"items": len(extra), "seconds": time.perf_counter() - t0}

    entry, hit = pipe.cache.get_or_build("teacher", {**pipe._key(), "of": "logits", **key}, build)
    log.info("teacher logits of unlabeled text %s (%s)", "cache hit" if hit else "computed", entry)
    more = load_file(entry / "logits.safetensors")["logits"]
    return [*pipe.train_items, *extra], torch.cat([table, more])


def teacher_layers(pipe: PruMuxPipeline) -> TeacherLayers | None:
    """The baseline's per-layer token states for every item of the recovery set (fp16,
    memory-mapped: about 50 KB per item and layer at 64 tokens; see `write_teacher_layers`).
    None unless the recipe distils layers (`recovery_layer_distill`) and has the logits
    table."""
    if not pipe.recipe.recovery_layer_distill or teacher_logits(pipe) is None:
        return None
    if pipe._teacher_layers is None:
        items, _ = recovery_set(pipe)
        _, unlabeled = unlabeled_items(pipe)

        def build(tmp: Path) -> dict:
            t0 = time.perf_counter()
            shape = write_teacher_layers(pipe.baseline(), items, tmp, device=pipe.device)
            return {**shape, "seconds": time.perf_counter() - t0}

        key = {**pipe._key(), "of": "layers", **unlabeled}
        entry, hit = pipe.cache.get_or_build("teacher", key, build)
        log.info("teacher layer states %s (%s)", "cache hit" if hit else "computed", entry)
        pipe._teacher_layers = TeacherLayers(entry)
    return pipe._teacher_layers
