"""Tokenisation once, dynamic padding per batch.

Every text is cut to its first `max_text_chars(max_seq_len)` characters before it is tokenised
(`data._texts.clip_text`, applied here in `encode`, which every path that tokenises goes
through: training, the exported model's `predict` and `load().predict`, the MLflow pyfunc and
the students' server), so one long text costs bounded work and memory.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from autoprumux.config import BATCHINGS
from autoprumux.data._glue import Example
from autoprumux.data._texts import clip_text
from autoprumux.errors import ConfigError

# the label of an unlabeled example (distilled from the teacher's outputs only, no task loss)
UNLABELED = -1
# characters tokenised per tokenizer call: its working memory grows with the characters of a call
ENCODE_CHUNK_CHARS = 1 << 20


@dataclass(frozen=True)
class Encoded:
    """Token ids of one example (no padding); `label` is the class index or UNLABELED."""

    input_ids: tuple[int, ...]
    token_type_ids: tuple[int, ...]
    label: int


def encode(examples: Sequence[Example], tokenizer, max_seq_len: int) -> list[Encoded]:
    """Tokenise examples (pairs as [CLS] a [SEP] b [SEP]) truncated to `max_seq_len` tokens,
    each text cut first (`clip_text`), at most `ENCODE_CHUNK_CHARS` characters per tokenizer
    call (the tokens do not depend on how the examples are grouped)."""
    if max_seq_len < 8:
        raise ConfigError(f"max_seq_len ({max_seq_len}) must be at least 8 (e.g. --max-seq-len 64)")
    pair = bool(examples) and examples[0].text_b is not None
    out: list[Encoded] = []
    start = 0
    while start < len(examples):
        end, chars = start, 0
        a: list[str] = []
        b: list[str] = []
        while end < len(examples) and (end == start or chars < ENCODE_CHUNK_CHARS):
            e = examples[end]
            a.append(clip_text(e.text_a, max_seq_len))
            chars += len(a[-1])
            if pair:
                b.append(clip_text(e.text_b, max_seq_len))  # type: ignore[arg-type]
                chars += len(b[-1])
            end += 1
        if pair:
            rows = _encode_pairs(tokenizer, a, b, max_seq_len)
        else:
            enc = tokenizer(a, truncation=True, max_length=max_seq_len, padding=False)
            tt = enc.get("token_type_ids") or [[0] * len(x) for x in enc["input_ids"]]
            rows = list(zip(enc["input_ids"], tt, strict=True))
        out += [
            Encoded(tuple(ids), tuple(t), e.label)
            for (ids, t), e in zip(rows, examples[start:end], strict=True)
        ]
        start = end
    return out


def _encode_pairs(
    tokenizer, a: list[str], b: list[str], max_seq_len: int
) -> list[tuple[list[int], list[int]]]:
    """(input ids, token type ids) of each pair, truncated as the tokenizer's longest_first
    truncates. Each pair is tokenised whole and cut here: the tokenizer's own truncation of a
    pair keeps every combination of the two texts' overflowing windows, so its work grows with
    the product of their lengths."""
    enc = tokenizer(a, b, truncation=False, padding=False, verbose=False)
    if enc.encodings is None:  # a tokenizer without sequence ids truncates itself
        enc = tokenizer(a, b, truncation=True, max_length=max_seq_len, padding=False)
        tt = enc.get("token_type_ids") or [[0] * len(x) for x in enc["input_ids"]]
        return list(zip(enc["input_ids"], tt, strict=True))
    rows = []
    for i, ids in enumerate(enc["input_ids"]):
        seq = enc.sequence_ids(i)  # 0 or 1: the token's text; None: a special token
        lengths = [seq.count(0), seq.count(1)]
        keep = _longest_first(lengths[0], lengths[1], max_seq_len - (len(ids) - sum(lengths)))
        types = enc["token_type_ids"][i] if "token_type_ids" in enc else [0] * len(ids)
        seen = [0, 0]
        kept: list[int] = []
        for j, s in enumerate(seq):
            if s is not None:
                seen[s] += 1
                if seen[s] > keep[s]:
                    continue
            kept.append(j)
        rows.append(([ids[j] for j in kept], [types[j] for j in kept]))
    return rows


def _longest_first(n1: int, n2: int, budget: int) -> tuple[int, int]:
    """The tokens a pair of texts of n1 and n2 tokens keeps of `budget`, as the `tokenizers`
    library's longest_first truncation keeps them: the shorter whole and the rest of the longer,
    or half each when both are longer than half (the odd token to the longer; to the second
    text of two equally long)."""
    if n1 + n2 <= budget:
        return n1, n2
    short, long = sorted((n1, n2))
    long = short if short > budget else max(short, budget - short)
    if short + long > budget:
        short, long = budget // 2, budget // 2 + budget % 2
    return (long, short) if n1 > n2 else (short, long)


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
