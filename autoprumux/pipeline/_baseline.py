"""The baseline every candidate is measured against, and what it is measured with.

- Given: `--model` is a fine-tuned sequence classifier (`BaseModel.labels`). Its encoder,
  pooler and head are used as is, the head's rows put in the task's class order
  (`head_rows`), and nothing is trained.
- Trained: otherwise the base encoder is fine-tuned on the task with the recipe until the
  validation split (`pipe.validation_items`, held out of train) stops improving, at most
  `finetune_steps` (`training.train_until_plateau`); its best evaluation's weights are kept, and
  the learning curve and whether it converged are recorded in its cache entry's metadata.
- `max_seq_len` left unset comes from the data: the shortest length (a multiple of 8) that
  holds `COVERED_SHARE` of the training examples whole, at most the model's positions.
- Its dev metrics are reported beside the dev set's majority-class rate and noise
  (`evaluation.dev_noise`); a baseline within noise of the majority class is warned about.
- Every evaluation also scores the baseline and the candidate on the validation split, the same
  way as dev (`validated`): that loss chooses, the dev loss reports (`autoprumux._selection`).
  A candidate that trained no stage of its own (`Recipe.trains_own_model` false: the baseline
  converted, or a path snapshot) never read the stopping split either, so it is chosen on both
  held-out splits together (`CHOOSING_BOTH`, `choosing_split`): twice the texts, and less
  exposed to one split's draw.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, NamedTuple

from autoprumux.config import Recipe
from autoprumux.data import STOPPING_SEED, Encoded, Example, encode, validation_split
from autoprumux.evaluation import (
    DevNoise,
    Measured,
    PairedPredictions,
    dev_noise,
    paired_loss_se,
    paired_metrics,
    paired_predictions,
)
from autoprumux.models import AnyModel
from autoprumux.models._loading import BaseModel
from autoprumux.pipeline._context import StageContext, StageReport
from autoprumux.pipeline._keys import cache_key
from autoprumux.training import (
    PlateauStop,
    StoppingRule,
    TrainConfig,
    describe_convergence,
    train_classifier,
    train_until_plateau,
)

log = logging.getLogger("autoprumux")

# the share of training examples an unset max_seq_len keeps whole
COVERED_SHARE = 0.99
# the split that chooses a candidate whose weights never read the stopping split
CHOOSING_BOTH = "validation+stopping"


def covering_length(lengths: Sequence[int], limit: int, share: float = COVERED_SHARE) -> int:
    """The shortest multiple of 8 (at least 8) that is at least `share` of `lengths`, capped at
    `limit`."""
    if not lengths:
        return min(limit, 8)
    ordered = sorted(lengths)
    need = ordered[max(0, math.ceil(share * len(ordered)) - 1)]
    return min(limit, max(8, -(-need // 8) * 8))


def resolve_max_seq_len(
    recipe: Recipe, train: Sequence[Example], tokenizer, base: BaseModel
) -> tuple[int, str]:
    """The recipe's max_seq_len (the data's when unset; a set one wins), and a line saying
    which it is."""
    if recipe.max_seq_len is not None:
        return recipe.max_seq_len, f"max_seq_len {recipe.max_seq_len} (as set)"
    limit = base.config.max_position_embeddings
    lengths = [len(e.input_ids) for e in encode(train, tokenizer, limit)]
    length = covering_length(lengths, limit)
    kept = sum(n <= length for n in lengths) / max(1, len(lengths))
    note = (
        f"max_seq_len {length} (from the data: {100 * kept:.1f}% of the {len(lengths)} training "
        f"examples fit whole; the model holds {limit} positions; set --max-seq-len to choose)"
    )
    return length, note


def build_baseline(pipe: StageContext) -> Path:
    """The baseline's cache entry: the given classifier as is, or the encoder fine-tuned."""
    rows = pipe.head_rows

    def build(tmp: Path) -> dict:
        if rows is not None:
            pipe.base.build_classifier(rows).save(tmp / "model")
            return {"given": pipe.base.name, "head_rows": list(rows)}
        m = pipe.fresh_model(1)
        r = pipe.recipe
        cfg = TrainConfig.from_recipe(r, r.finetune_steps)
        if not pipe.validation_items:
            stats = train_classifier(
                m, pipe.train_items, cfg, desc="baseline fine-tune", device=pipe.device
            )
            m.save(tmp / "model")
            return {"train": stats}
        stats = train_until_plateau(
            m,
            pipe.train_items,
            cfg,
            lambda model: stopping_metric(pipe, model),
            PlateauStop(r.patience, r.min_delta),
            r.eval_every,
            anneal=r.plateau_anneal,
            desc="baseline fine-tune",
            device=pipe.device,
        )
        stopping = stats.pop("stopping")
        m.save(tmp / "model")
        return {"train": stats, "stopping": stopping}

    entry, hit = pipe.cache.get_or_build("baseline", cache_key(pipe), build)
    if rows is not None:
        log.info("baseline: the given classifier %s, used as is (%s)", pipe.base.name, entry)
    else:
        log.info("baseline %s (%s)", "cache hit" if hit else "trained", entry)
        stopping = pipe.cache.meta(entry).get("stopping")
        if stopping is not None:
            log.info("%s", describe_convergence(stopping, pipe.task.metric))
    return entry


def measure_baseline(pipe: StageContext) -> dict[str, float]:
    """The baseline's dev metrics (from its cached dev predictions, `baseline_predictions`),
    logged beside the dev set's majority rate and noise; a baseline within noise of the majority
    class is warned about."""
    metrics = baseline_split_metrics(pipe, "dev")
    noise = noise_of(pipe, metrics)
    origin = "given, used as is" if pipe.head_rows is not None else "trained here"
    log.info(
        "baseline (%s): dev %s %.2f; %s",
        origin,
        pipe.task.metric,
        metrics["metric"],
        noise.describe(),
    )
    if noise.near_majority:
        log.warning("%s", noise.warning())
    return metrics


def has_stopping_split(pipe: StageContext) -> bool:
    """Whether the recipe held out a stopping split of its own (else the validation split stops
    training too, and `stopping_items` are the validation items)."""
    return bool(pipe.stopping_items) and pipe.stopping_items is not pipe.validation_items


def split_items(pipe: StageContext, split: str) -> list[Encoded]:
    """The items of a scored split: "dev", "validation", "stopping", or `CHOOSING_BOTH` (the
    validation items, then the stopping split's when the recipe holds one out)."""
    if split == CHOOSING_BOTH:
        extra = pipe.stopping_items if has_stopping_split(pipe) else []
        return pipe.validation_items + extra
    return {
        "dev": pipe.dev_items,
        "validation": pipe.validation_items,
        "stopping": pipe.stopping_items,
    }[split]


def choosing_split(pipe: StageContext, trains_own_model: bool) -> str:
    """The held-out split that chooses a candidate: `CHOOSING_BOTH` when it trained no stage of
    its own (nothing it is made of was stopped, or its checkpoint kept, on the stopping split)
    and the recipe holds a stopping split out; else "validation". The baseline itself stopped
    on the stopping split, so there its metric reads, if anything, high: a loss measured there
    errs toward refusing a candidate, not toward passing one."""
    if trains_own_model or not has_stopping_split(pipe):
        return "validation"
    return CHOOSING_BOTH


def split_metrics(pipe: StageContext, predicted: PairedPredictions, split: str) -> dict[str, float]:
    """The metrics, in points, of predicted labels for a split's items (`split_items`)."""
    gold = [e.label for e in split_items(pipe, split)]
    return paired_metrics(pipe.task.metric, predicted, gold, pipe.task.positive)


def baseline_predictions(pipe: StageContext, split: str) -> PairedPredictions:
    """The baseline's predicted labels for a split's items (`split_items`), predicted once per
    pipeline and split (one pairing: the baseline is not multiplexed)."""
    cached = pipe.tables.baseline_predictions
    if split not in cached:
        cached[split] = held_out_predictions(pipe, pipe.baseline(), split_items(pipe, split), 1)
    return cached[split]


def baseline_split_metrics(pipe: StageContext, split: str) -> dict[str, float]:
    """The baseline's metrics on a split (`split_items`), from its predictions there
    (`baseline_predictions`), computed once per pipeline and split."""
    cached = pipe.tables.baseline_metrics
    if split not in cached:
        cached[split] = split_metrics(pipe, baseline_predictions(pipe, split), split)
    return cached[split]


def scored_beside_baseline(
    pipe: StageContext, model: AnyModel, split: str, pairings: int
) -> tuple[dict[str, float], float]:
    """`model`'s metrics on a split (`split_items`; a multiplexed model's over `pairings` seeded
    pairings) and the paired standard error of its loss against the baseline there
    (`paired_loss_se`), both from one set of predictions."""
    predicted = held_out_predictions(pipe, model, split_items(pipe, split), pairings)
    gold = [e.label for e in split_items(pipe, split)]
    base = baseline_predictions(pipe, split)
    se = paired_loss_se(pipe.task.metric, base, predicted, gold, pipe.task.positive)
    return split_metrics(pipe, predicted, split), se


def noise_of(pipe: StageContext, metrics: dict[str, float]) -> DevNoise:
    """The dev set's majority rate and noise at the baseline's accuracy."""
    return dev_noise((e.label for e in pipe.data.dev), metrics["accuracy"])


class TrainSplit(NamedTuple):
    """The training examples, encoded and split: `train` (trained on), `validation` (chooses),
    `stopping` (stops training: the validation items themselves unless the recipe holds out a
    stopping split), `untrained` (every text side of the rows not trained on) and a line saying
    how many were held out."""

    train: list[Encoded]
    validation: list[Encoded]
    stopping: list[Encoded]
    untrained: frozenset[str]
    note: str


def split_train(pipe: StageContext) -> TrainSplit:
    """The training examples split as `data.validation_split` carves them: the validation split,
    then, with the recipe's `stopping_examples` (by default as many, when the rest can spare
    them), a stopping split of the rest (whole texts too, a seed of its own)."""
    train, r = pipe.data.train, pipe.recipe
    split = validation_split(train, r.validation_examples, r.batch_size)
    trained, stop, dropped, note = split.trained, [], list(split.dropped), split.note
    if split.held and r.stopping_examples != 0:
        rest = validation_split(
            [train[i] for i in trained],
            len(split.held) if r.stopping_examples is None else r.stopping_examples,
            r.batch_size,
            seed=STOPPING_SEED,
            field="stopping_examples",
            optional=r.stopping_examples is None,
        )
        stop = [trained[i] for i in rest.held]
        dropped += [trained[i] for i in rest.dropped]
        trained = [trained[i] for i in rest.trained]
        note += (
            f"; stopping: {rest.note.removeprefix('validation: ')}, read only to stop"
            if stop
            else f"; {rest.note}: the validation split stops training too"
        )
    log.info("%s", note)
    items = encode(train, pipe.tokenizer, pipe.max_seq_len)
    untrained = frozenset(
        side
        for i in split.held + stop + dropped
        for side in (train[i].text_a, train[i].text_b)
        if side is not None
    )
    held = [items[i] for i in split.held]
    return TrainSplit(
        [items[i] for i in trained],
        held,
        [items[i] for i in stop] if stop else held,
        untrained,
        note,
    )


def validation_metric(pipe: StageContext, model: AnyModel) -> float:
    """`model`'s metric on the validation split, in points; a multiplexed model's over one
    seeded pairing of the split (see `paired_dev_metrics`)."""
    return validation_metrics(pipe, model, pairings=1)["metric"]


def stopping_metric(pipe: StageContext, model: AnyModel) -> float:
    """`model`'s metric on the stopping split (the validation split unless the recipe holds out
    one of its own), in points, as `validation_metric` scores: what every plateau reads."""
    return held_out_metrics(pipe, model, pipe.stopping_items, pairings=1)["metric"]


def validation_metrics(pipe: StageContext, model: AnyModel, pairings: int) -> dict[str, float]:
    """`model`'s metrics on the validation split (`held_out_metrics`)."""
    return held_out_metrics(pipe, model, pipe.validation_items, pairings)


def held_out_predictions(
    pipe: StageContext, model: AnyModel, items: Sequence[Encoded], pairings: int
) -> PairedPredictions:
    """`model`'s predicted labels for held-out `items` (dev, or a split of train), as dev's are
    predicted (a multiplexed model's under `pairings` seeded pairings)."""
    return paired_predictions(model, items, pairings=pairings, device=pipe.device)


def held_out_metrics(
    pipe: StageContext, model: AnyModel, items: Sequence[Encoded], pairings: int
) -> dict[str, float]:
    """`model`'s metrics on held-out training `items`, in points, scored as `dev_metrics` scores
    dev (a multiplexed model's: the mean over `pairings` seeded pairings)."""
    predicted = held_out_predictions(pipe, model, items, pairings)
    return paired_metrics(pipe.task.metric, predicted, [e.label for e in items], pipe.task.positive)


def validation_loss(pipe: StageContext, model: AnyModel, pairings: int) -> float | None:
    """The baseline's validation metric minus `model`'s, in points, scored as `validated` scores
    them (what chooses); None without a validation split (then the dev loss chooses)."""
    if not pipe.validation_items:
        return None
    base = baseline_split_metrics(pipe, "validation")["metric"]
    return base - validation_metrics(pipe, model, pairings)["metric"]


def stage_scores(pipe: StageContext, model: AnyModel) -> dict[str, float | None]:
    """What a candidate's intermediate step records (one pairing): ``dev_metric`` (reports) and
    ``validation_metric`` (chooses; None without a validation split)."""
    val = validation_metric(pipe, model) if pipe.validation_items else None
    return {"dev_metric": pipe.dev_metrics(model, pairings=1)["metric"], "validation_metric": val}


def stage_losses(pipe: StageContext, scores: dict[str, Any]) -> tuple[float, float | None] | None:
    """(dev loss, validation loss) of an intermediate step's `stage_scores`, the baseline's
    metric minus the step's on each split (a search's pruner reads the one that chooses,
    `_selection`); the validation loss is None without a split. None when the split exists but
    the step recorded no validation metric (scored before steps recorded one): its dev loss
    alone must not choose."""
    dev = float(pipe.baseline_metrics()["metric"] - scores["dev_metric"])
    if not pipe.validation_items:
        return dev, None
    if scores.get("validation_metric") is None:
        return None
    base = baseline_split_metrics(pipe, "validation")["metric"]
    return dev, float(base - scores["validation_metric"])


def report_stage(
    pipe: StageContext, on_stage: StageReport, step: int, scores: dict[str, Any]
) -> None:
    """`on_stage(step, dev loss, validation loss)` of a step (`stage_losses`); a step scored
    without its validation metric is not reported."""
    losses = stage_losses(pipe, scores)
    if losses is not None:
        on_stage(step, *losses)


def validated(
    pipe: StageContext,
    baseline: Measured,
    candidate: Measured,
    model: AnyModel,
    pairings: int,
    split: str = "validation",
) -> dict[str, Any]:
    """`Evaluation`'s fields from the split that chooses (`split`: "validation", or
    `CHOOSING_BOTH` from `choosing_split`): the baseline and the candidate (`model`) with their
    metrics there (the baseline's predicted once per pipeline and split), the split's noise at
    the baseline's accuracy there (its `split` names the split), and the paired standard error
    of the loss (`paired_loss_se`); the two unchanged, and nothing else, without a split."""
    if not pipe.validation_items:
        return {"baseline": baseline, "candidate": candidate}
    base_v = baseline_split_metrics(pipe, split)
    cand_v, se = scored_beside_baseline(pipe, model, split, pairings)

    def scored(m: Measured, v: dict[str, float]) -> Measured:
        return replace(m, validation_metric=v["metric"], validation_accuracy=v["accuracy"])

    return {
        "baseline": scored(baseline, base_v),
        "candidate": scored(candidate, cand_v),
        "validation_noise": dev_noise(
            (e.label for e in split_items(pipe, split)), base_v["accuracy"], split
        ),
        "validation_loss_se": se,
    }


def stage_rule(pipe: StageContext) -> StoppingRule:
    """The baseline's stopping rule for the candidates' stages (pruning recovery, the mux
    fine-tunes, the students): the stopping split's metric every `eval_every` steps, `patience`
    and `min_delta`; their step counts are the caps. Without a split they train their caps."""
    r = pipe.recipe
    validate = (lambda model: stopping_metric(pipe, model)) if pipe.stopping_items else None
    return StoppingRule(validate, r.eval_every, r.patience, r.min_delta, r.plateau_anneal)


def training_record(pipe: StageContext) -> dict | None:
    """How the trained baseline stopped (`PlateauStop.summary`: converged, steps, the learning
    curve), as its cache entry records it; None for a given classifier or one trained without a
    validation split."""
    return pipe.cache.meta(pipe.baseline_entry()).get("stopping")
