"""Held-out splits that share no text with what is trained on.

A training set may hold a text and parts of it: SST-2's holds every labelled phrase of its
sentences. A held-out sentence whose phrases stay in training is scored on what was trained,
and its accuracy overstates the accuracy on new text. So a split holds out *whole texts* (those
no other example's text contains), drops their parts from training, and scores the whole texts
only, as a dev set of whole texts is scored. Without such overlap every text is whole and the
split is the plain stratified one."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

# texts longer than this (in words) are not looked for inside others: a whole-text search is
# quadratic in a text's length, and long texts are not phrases of other texts
MAX_PART_WORDS = 64
PAIR_MARK = "\x00"  # joins a pair's two sides, so a part of one side never spans both


class Labelled(Protocol):
    @property
    def text_a(self) -> str: ...
    @property
    def text_b(self) -> str | None: ...
    @property
    def label(self) -> int: ...


def text_key(row: Labelled) -> str:
    """A row's text as compared for overlap: lower-cased words, a pair's sides joined by a
    mark no text holds."""
    text = row.text_a if row.text_b is None else f"{row.text_a} {PAIR_MARK} {row.text_b}"
    return " ".join(text.lower().split())


@dataclass(frozen=True)
class HeldOut:
    """Indices into the rows: trained on, held out and scored, and dropped (parts of a held-out
    text: neither trained on nor scored). Each list in the rows' order."""

    trained: list[int]
    held: list[int]
    dropped: list[int]


class WholeTexts:
    """The rows' distinct texts, which of them are whole (no other row's text contains them,
    word for word), and each text's parts."""

    def __init__(self, rows: Sequence[Labelled]):
        self.labels = [r.label for r in rows]
        self.rows_of: dict[str, list[int]] = {}
        for i, row in enumerate(rows):
            self.rows_of.setdefault(text_key(row), []).append(i)
        # a part starts with some word and has some length: only those spans are looked up
        self._lengths: dict[str, set[int]] = {}
        for key in self.rows_of:
            words = key.split()
            if 0 < len(words) <= MAX_PART_WORDS:
                self._lengths.setdefault(words[0], set()).add(len(words))
        parts = {p for key in self.rows_of for p in self.parts(key)}
        self.wholes = [key for key in self.rows_of if key not in parts]  # first-seen order
        # each whole text's label (its first row's), in `wholes` order
        self.whole_labels = [self.labels[self.rows_of[k][0]] for k in self.wholes]

    def parts(self, key: str) -> Iterator[str]:
        """The other rows' texts inside `key` (word-aligned, shorter than it)."""
        words = key.split()
        for start, word in enumerate(words):
            for length in self._lengths.get(word, ()):
                if length < len(words) and start + length <= len(words):
                    span = " ".join(words[start : start + length])
                    if span in self.rows_of:
                        yield span

    def hold_out(self, size: int, seed: int) -> HeldOut:
        """`size` whole texts held out (stratified by label, seeded: the same for the same rows,
        size and seed) with every row of them, and their parts dropped from training."""
        if size == 0:
            return HeldOut(list(range(len(self.labels))), [], [])
        from sklearn.model_selection import train_test_split

        _, chosen = train_test_split(
            list(range(len(self.wholes))),
            test_size=size,
            stratify=self.whole_labels,
            random_state=seed,
        )
        keys = [self.wholes[i] for i in chosen]
        held = sorted(i for k in keys for i in self.rows_of[k])
        dropped = sorted({i for k in keys for p in self.parts(k) for i in self.rows_of[p]})
        out = set(held) | set(dropped)
        trained = [i for i in range(len(self.labels)) if i not in out]
        return HeldOut(trained, held, dropped)
