"""Held-out splits share no text with training: a held-out sentence's phrases (SST-2 labels
every phrase of its sentences) are not trained on, and only whole texts are scored."""

from __future__ import annotations

import random
from pathlib import Path

from sklearn.model_selection import train_test_split

from autoprumux.data import DataSource, Example, carve_dev_split, validation_split, warmup_texts
from autoprumux.data._overlap import WholeTexts, text_key

WORDS = ["the", "film", "is", "a", "slow", "bright", "story", "of", "love", "dull", "cast"]


def sentences_with_phrases(count: int = 60, seed: int = 0) -> tuple[list[Example], set[str]]:
    """`count` sentences of 6-9 words (each ends with its own number, so none holds another),
    each followed by some of its phrases, labelled as SST-2's are; and the sentences' texts."""
    rng = random.Random(seed)
    rows: list[Example] = []
    seen: set[str] = set()
    sentences = set()
    for i in range(count):
        words = [rng.choice(WORDS) for _ in range(rng.randint(5, 8))] + [f"n{i}"]
        label = i % 2
        rows.append(Example(" ".join(words), None, label))
        sentences.add(" ".join(words))
        for _ in range(6):
            a = rng.randrange(len(words) - 1)
            b = rng.randrange(a + 1, len(words))
            phrase = " ".join(words[a:b])
            if phrase not in seen:
                seen.add(phrase)
                rows.append(Example(phrase, None, rng.randrange(2)))
    return rows, sentences


def test_held_out_sentences_are_whole_and_none_of_their_phrases_is_trained_on():
    rows, sentences = sentences_with_phrases()
    split = validation_split(rows, 10, batch_size=4)
    assert len(split.held) == 10 and {rows[i].text_a for i in split.held} <= sentences
    assert sorted(split.trained + split.held + split.dropped) == list(range(len(rows)))
    held_texts = [f" {rows[i].text_a} " for i in split.held]
    for i in split.trained:
        inside = [h for h in held_texts if f" {rows[i].text_a} " in h]
        assert not inside, f"trained row {rows[i].text_a!r} is part of held-out {inside}"
    # every dropped row is part of a held-out sentence: nothing else is lost to training
    assert split.dropped and all(
        any(f" {rows[i].text_a} " in h for h in held_texts) for i in split.dropped
    )
    assert "parts of the held-out texts" in split.note
    # a phrase shared with a sentence left in training is dropped from training all the same
    assert len({rows[i].label for i in split.held}) == 2  # stratified by the sentences' labels


def test_without_overlap_the_split_is_the_plain_stratified_one():
    labels = [int(i % 3 == 0) for i in range(200)]
    rows = [Example(f"review number {i}", None, y) for i, y in enumerate(labels)]
    split = validation_split(rows, 20, batch_size=8, seed=11)
    trained, held = train_test_split(
        list(range(200)), test_size=20, stratify=labels, random_state=11
    )
    assert (split.trained, split.held, split.dropped) == (sorted(trained), sorted(held), [])


def test_duplicates_and_case_fall_on_one_side_and_pairs_compare_both_sides():
    rows = [Example(f"Text {i}", None, i % 2) for i in range(40)]
    rows += [Example(" text   3 ", None, 1), Example("TEXT 4", None, 0)]
    split = validation_split(rows, 10, batch_size=4)
    for first, dup in ((3, 40), (4, 41)):
        assert (first in split.held) == (dup in split.held)
    # a pair holds a part only within one side: "b c" is not a part of ("a b", "c d")
    pairs = WholeTexts([Example("a b", "c d", 0), Example("b c", None, 1)])
    assert sorted(pairs.wholes) == sorted([text_key(Example("a b", "c d", 0)), "b c"])


def test_a_carved_dev_split_drops_its_sentences_phrases_from_train():
    rows, sentences = sentences_with_phrases(seed=3)
    train, dev, described = carve_dev_split(rows, 0.2)
    assert {e.text_a for e in dev} <= sentences and len(dev) == 12  # 20% of 60 sentences
    dev_texts = [f" {e.text_a} " for e in dev]
    assert not [e for e in train if any(f" {e.text_a} " in d for d in dev_texts)]
    assert "dropped from train" in described


def test_the_distilled_corpus_leaves_out_the_validation_split(tmp_path: Path, tiny_checkpoint):
    from autoprumux.config import Recipe
    from autoprumux.pipeline import PruMuxPipeline
    from autoprumux.pipeline._corpus import corpus_texts

    rows, _ = sentences_with_phrases(count=120)
    root = tmp_path / "data"
    root.mkdir()
    for name, part in (("train.csv", rows), ("dev.csv", rows[:30])):
        body = "".join(f"{e.text_a},{'pos' if e.label else 'neg'}\n" for e in part)
        (root / name).write_text("text,label\n" + body)
    pipe = PruMuxPipeline(
        data=DataSource(root),
        model=tiny_checkpoint,
        recipe=Recipe(batch_size=8, max_seq_len=16),
        cache_dir=tmp_path / "cache",
        warmup_corpus="task",
    )
    assert len(pipe.validation_items) == 16  # 120 sentences: 10% is fewer than 8 per class
    held = pipe.untrained_texts
    assert len(held) > 16  # the sentences and their phrases
    corpus = corpus_texts(pipe, 10_000)
    assert corpus and not set(corpus) & held
    assert set(warmup_texts("task", pipe.data, None, 10_000, 0)) & held  # without the rule
