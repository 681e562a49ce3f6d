"""Tokenisation once, dynamic padding per batch."""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from autoprumux.data._glue import Example
from autoprumux.errors import ConfigError

# the label of an unlabeled example (distilled from the teacher's outputs only, no task loss)
UNLABELED = -1


@dataclass(frozen=True)
class Encoded:
    """Token ids of one example (no padding); `label` is the class index or UNLABELED."""

    input_ids: tuple[int, ...]
    token_type_ids: tuple[int, ...]
    label: int


def encode(examples: Sequence[Example], tokenizer, max_seq_len: int) -> list[Encoded]:
    """Tokenise examples (pairs as [CLS] a [SEP] b [SEP]) truncated to `max_seq_len` tokens."""
    if max_seq_len < 8:
        raise ConfigError(f"max_seq_len ({max_seq_len}) must be at least 8 (e.g. --max-seq-len 64)")
    a = [e.text_a for e in examples]
    b = [e.text_b for e in examples] if examples and examples[0].text_b is not None else None
    enc = tokenizer(a, b, truncation=True, max_length=max_seq_len, padding=False)
    tt = enc.get("token_type_ids") or [[0] * len(x) for x in enc["input_ids"]]
    return [
        Encoded(tuple(ids), tuple(t), e.label)
        for ids, t, e in zip(enc["input_ids"], tt, examples, strict=True)
    ]


def collate(
    items: Sequence[Encoded], pad_id: int = 0, pad_to: int | None = None
) -> dict[str, torch.Tensor]:
    """Pad to the longest item (or to `pad_to`); returns input_ids, attention_mask, token_type_ids, labels."""
    length = max(len(x.input_ids) for x in items)
    if pad_to is not None:
        length = max(length, pad_to)
    b = len(items)
    ids = torch.full((b, length), pad_id, dtype=torch.long)
    tt = torch.zeros((b, length), dtype=torch.long)
    mask = torch.zeros((b, length), dtype=torch.long)
    for i, x in enumerate(items):
        n = len(x.input_ids)
        ids[i, :n] = torch.tensor(x.input_ids)
        tt[i, :n] = torch.tensor(x.token_type_ids)
        mask[i, :n] = 1
    labels = torch.tensor([x.label for x in items], dtype=torch.long)
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": tt, "labels": labels}


def batches(
    items: Sequence[Encoded], batch_size: int, *, shuffle: bool, seed: int = 0, pad_id: int = 0
) -> Iterator[dict[str, torch.Tensor]]:
    """One pass over `items` in batches; the last batch may be smaller (never dropped)."""
    order = list(range(len(items)))
    if shuffle:
        random.Random(seed).shuffle(order)
    for s in range(0, len(order), batch_size):
        yield collate([items[i] for i in order[s : s + batch_size]], pad_id)


def infinite_batches(
    items: Sequence[Encoded],
    batch_size: int,
    *,
    seed: int = 0,
    pad_id: int = 0,
    with_index: bool = False,
) -> Iterator[dict[str, torch.Tensor]]:
    """Endless shuffled full batches (epoch after epoch, reshuffled each epoch); with
    `with_index`, each batch's "index" holds its items' positions in `items`."""
    if len(items) < batch_size:
        raise ValueError(
            f"training set has {len(items)} examples, fewer than the batch size ({batch_size}); "
            "lower the batch size or raise max_train_examples"
        )
    epoch = 0
    while True:
        order = list(range(len(items)))
        random.Random(seed * 100_003 + epoch).shuffle(order)
        for s in range(0, len(order) - batch_size + 1, batch_size):
            picked = order[s : s + batch_size]
            batch = collate([items[i] for i in picked], pad_id)
            if with_index:
                batch["index"] = torch.tensor(picked)
            yield batch
        epoch += 1
