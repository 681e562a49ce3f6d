"""The unlabeled corpus of the multiplexing warm-up: sentences, deduplicated and sampled."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from autoprumux.data._encoding import Encoded, encode
from autoprumux.data._glue import Example, TaskData, load_task
from autoprumux.errors import ConfigError, DataNotFoundError

log = logging.getLogger("autoprumux")

CORPORA = ("shared", "task")  # or a text file


def read_text_file(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"{what} {str(path)!r} is not UTF-8 text (byte {e.start}); pass a text file with one "
            "sentence per line"
        ) from None


def check_corpus(src: str) -> None:
    """A warm-up corpus named as a file must exist and be UTF-8 text (checked before any work)."""
    if src in CORPORA:
        return
    path = Path(src).expanduser()
    if not path.is_file():
        raise ConfigError(
            f"warm-up corpus {src!r} is not 'shared', 'task' or an existing text file "
            "(one sentence per line)"
        )
    read_text_file(path, "warm-up corpus")


def warmup_texts(
    src: str,
    task_data: TaskData,
    data_dir: str | None,
    size: int,
    seed: int,
    exclude: frozenset[str] = frozenset(),
) -> list[str]:
    """Up to `size` sentences (each side of a pair is one), a seeded sample of the deduplicated,
    sorted corpus without `exclude` (texts a stage must not distil on). `src`: "shared" = the
    training text of SST-2, CoLA and MRPC found in the GLUE directory (the task's own text when
    it comes from the hub); "task" = the task's training text; anything else = a UTF-8 text
    file, one sentence per line."""
    texts: list[str] = []
    if src in CORPORA:
        sets = [task_data]
        if src == "shared" and not task_data.source.startswith("hf:"):
            sets = []
            for name in ("sst2", "cola", "mrpc"):
                try:
                    sets.append(load_task(name, data_dir=data_dir))
                except DataNotFoundError:
                    log.info("warm-up corpus: %s not found, skipped", name)
            if not sets:
                sets = [task_data]
        for td in sets:
            for ex in td.train:
                texts.append(ex.text_a)
                if ex.text_b:
                    texts.append(ex.text_b)
    else:
        check_corpus(src)
        raw = read_text_file(Path(src).expanduser(), "warm-up corpus")
        texts = [line.strip() for line in raw.splitlines()]
    # dedup; sorted so the sample is reproducible
    texts = sorted({t for t in texts if t and t not in exclude})
    if not texts:
        raise ConfigError(f"warm-up corpus {src!r} holds no sentences")
    rng = torch.Generator().manual_seed(seed)
    pick = torch.randperm(len(texts), generator=rng)[: min(size, len(texts))].tolist()
    return [texts[i] for i in pick]


def encode_corpus(
    texts: Sequence[str], tokenizer: Any, max_seq_len: int
) -> tuple[list[Encoded], str]:
    """The warm-up sentences tokenised, and a short content hash of them (part of every warm-up
    cache key)."""
    items = encode([Example(t, None, 0) for t in texts], tokenizer, max_seq_len)
    h = hashlib.sha256()
    for x in items:
        h.update(repr(x.input_ids).encode())
    return items, h.hexdigest()[:16]
