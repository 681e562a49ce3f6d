"""Batches as torch tensors: the rows `data._encoding` tokenised and padded, shuffled or in
order, with their labels."""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence

import torch

from autoprumux.config import BATCHINGS
from autoprumux.data._encoding import Encoded, pad
from autoprumux.errors import ConfigError

# the label of an unlabeled example (distilled from the teacher's outputs only, no task loss)
UNLABELED = -1


def collate(
    items: Sequence[Encoded], pad_id: int = 0, pad_to: int | None = None
) -> dict[str, torch.Tensor]:
    """Pad to the longest item (or to `pad_to`, see `data._encoding.pad`); returns input_ids,
    attention_mask, token_type_ids, labels."""
    out = {k: torch.from_numpy(v) for k, v in pad(items, pad_id, pad_to).items()}
    out["labels"] = torch.tensor([x.label for x in items], dtype=torch.long)
    return out


def batches(
    items: Sequence[Encoded], batch_size: int, *, shuffle: bool, seed: int = 0, pad_id: int = 0
) -> Iterator[dict[str, torch.Tensor]]:
    """One pass over `items` in batches; the last batch may be smaller (never dropped)."""
    order = list(range(len(items)))
    if shuffle:
        random.Random(seed).shuffle(order)
    for s in range(0, len(order), batch_size):
        yield collate([items[i] for i in order[s : s + batch_size]], pad_id)


# batches per length-sorted pool in "grouped" batching: large enough that a batch's items are of
# nearly one length, small enough that every pool still mixes examples from across the epoch
GROUP_POOL_BATCHES = 50


def infinite_batches(
    items: Sequence[Encoded],
    batch_size: int,
    *,
    seed: int = 0,
    pad_id: int = 0,
    with_index: bool = False,
    batching: str = "random",
) -> Iterator[dict[str, torch.Tensor]]:
    """Endless shuffled full batches (epoch after epoch, reshuffled each epoch); with
    `with_index`, each batch's "index" holds its items' positions in `items`.
    `batching` "random": each batch is the next `batch_size` of the shuffled epoch; "grouped":
    the shuffled epoch is cut into pools of `GROUP_POOL_BATCHES` batches, each pool sorted by
    length and cut into batches, and the epoch's batches shuffled, so that a batch pads to
    little more than its own items' length (every item is still seen once per epoch)."""
    if batching not in BATCHINGS:
        raise ConfigError(f"batching ({batching!r}) must be one of {list(BATCHINGS)}")
    if len(items) < batch_size:
        raise ValueError(
            f"training set has {len(items)} examples, fewer than the batch size ({batch_size}); "
            "lower the batch size or raise max_train_examples"
        )
    epoch = 0
    while True:
        rng = random.Random(seed * 100_003 + epoch)
        order = list(range(len(items)))
        rng.shuffle(order)
        full = order[: len(order) // batch_size * batch_size]  # full batches only
        if batching == "grouped":
            cuts = _length_grouped(items, full, batch_size, rng)
        else:
            cuts = [full[s : s + batch_size] for s in range(0, len(full), batch_size)]
        for picked in cuts:
            batch = collate([items[i] for i in picked], pad_id)
            if with_index:
                batch["index"] = torch.tensor(picked)
            yield batch
        epoch += 1


def _length_grouped(
    items: Sequence[Encoded], order: list[int], batch_size: int, rng: random.Random
) -> list[list[int]]:
    """`order`'s items as batches of near-equal length (see `infinite_batches`), shuffled."""
    pool = batch_size * GROUP_POOL_BATCHES
    cuts: list[list[int]] = []
    for s in range(0, len(order), pool):
        ranked = sorted(order[s : s + pool], key=lambda i: len(items[i].input_ids))
        cuts += [ranked[b : b + batch_size] for b in range(0, len(ranked), batch_size)]
    rng.shuffle(cuts)
    return cuts
