"""The unlabeled sentences a stage may add to its training set: a seeded sample of the warm-up
corpus, tokenised as UNLABELED items, with what keys them (their count and content hash)."""

from __future__ import annotations

from autoprumux.config import Recipe
from autoprumux.data import UNLABELED, Encoded, encode_corpus, warmup_texts
from autoprumux.pipeline._context import StageContext


def distils_from_tables(r: Recipe) -> bool:
    """Whether the recipe's distilling steps read the cached tables (the L2L executor runs the
    teacher itself)."""
    return bool(r.distill_weight) and r.trainer != "l2l"


def corpus_texts(pipe: StageContext, size: int) -> list[str]:
    """`size` sentences of the warm-up corpus (a seeded sample, see `warmup_texts`) for a stage
    to distil on, none of them a text the validation split holds out: the baseline's logits on
    those would teach a candidate to agree with it where it is scored."""
    return warmup_texts(
        pipe.warmup_corpus, pipe.data, pipe.data_dir, size, pipe.recipe.seed, pipe.untrained_texts
    )


def corpus_items(pipe: StageContext, size: int) -> tuple[list[Encoded], dict]:
    """`corpus_texts` tokenised as UNLABELED items, and what keys them (their count and content
    hash)."""
    items, digest = encode_corpus(corpus_texts(pipe, size), pipe.tokenizer, pipe.max_seq_len)
    return (
        [Encoded(x.input_ids, x.token_type_ids, UNLABELED) for x in items],
        {"unlabeled": len(items), "unlabeled_corpus": digest},
    )


def unlabeled_items(pipe: StageContext) -> tuple[list[Encoded], dict]:
    """`recovery_unlabeled` sentences of the warm-up corpus (`corpus_items`); empty when the
    recipe adds none, or does not distil: they would have nothing to learn from."""
    r = pipe.recipe
    if not r.recovery_unlabeled or not distils_from_tables(r):
        return [], {}
    if pipe.tables.unlabeled is None:
        pipe.tables.unlabeled = corpus_items(pipe, r.recovery_unlabeled)
    return pipe.tables.unlabeled
