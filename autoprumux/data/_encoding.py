"""Tokenisation once, and padding to the longest of a batch, without torch: what training,
the exported model's predictors (torch and ONNX Runtime alike), the MLflow pyfunc and the
students' server feed a model is made here.

Every text is cut to its first `max_text_chars(max_seq_len)` characters before it is tokenised
(`data._texts.clip_text`, applied in `encode`, which every path that tokenises goes through),
so one long text costs bounded work and memory. `pad` lays the token rows out as the arrays a
model takes; `data.collate` makes them torch tensors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from autoprumux.data._glue import Example
from autoprumux.data._texts import clip_text
from autoprumux.errors import ConfigError

# characters tokenised per tokenizer call: its working memory grows with the characters of a call
ENCODE_CHUNK_CHARS = 1 << 20


@dataclass(frozen=True)
class Encoded:
    """Token ids of one example (no padding); `label` is the class index or UNLABELED
    (`data._batching`)."""

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


def pad(
    items: Sequence[Encoded], pad_id: int = 0, pad_to: int | None = None
) -> dict[str, np.ndarray]:
    """The token rows of `items` padded to the longest (or to `pad_to`): int64 arrays
    input_ids (padded with `pad_id`), attention_mask (1 on real tokens) and token_type_ids
    (padded with 0), each (len(items), length)."""
    length = max(len(x.input_ids) for x in items)
    if pad_to is not None:
        length = max(length, pad_to)
    b = len(items)
    ids = np.full((b, length), pad_id, dtype=np.int64)
    tt = np.zeros((b, length), dtype=np.int64)
    mask = np.zeros((b, length), dtype=np.int64)
    for i, x in enumerate(items):
        n = len(x.input_ids)
        ids[i, :n] = x.input_ids
        tt[i, :n] = x.token_type_ids
        mask[i, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": tt}
