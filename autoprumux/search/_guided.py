"""Budget-guided search: which configuration to evaluate next for one accuracy-loss budget.

A user asks "the fastest configuration within my budget", so the trials worth paying for are
the ones that can still change that answer. Two facts hold by construction (the same ones the
meta-model's monotone constraints encode): within one technique, a more aggressive configuration
(higher sparsity and N; fewer or shallower students) loses at least as much accuracy and runs at
least as fast. So after each trial:

1. **Dominance.** A candidate no more aggressive than a measured trial that is no faster than
   the best feasible one is ruled out (it cannot be faster). A candidate at least as aggressive as a measured miss is *shadowed*
   by it: measured losses are noisy (training and the dev set's size), so a miss only lowers
   its priority. Shadowed by no more than `noise` points it stays an ordinary candidate (bisected
   last); shadowed further it becomes a long shot, scored by constrained expected improvement
   with the chance that two measurements `noise` apart differ by the shadow, and dropped once
   that chance is below `LONG_SHOT_P`. The baseline is known (loss 0, 1.00x) and never proposed;
   a configuration that failed twice is not proposed again.
2. **Bisection** while fewer than `min_model_trials` trials are measured: the middle of the
   first open axis (the sparsities still open at the smallest N in the fastest precision). Then one
   **anchor** per row not measured yet (its least aggressive open point, e.g. N=4 at sparsity 0):
   a tree model cannot extrapolate into an unseen N, and one miss there rules the row out.
3. **Constrained expected improvement** afterwards: the meta-model (fitted on the measured trials)
   gives each open candidate a probability of staying inside the budget and an expected
   improvement of log-speedup over the best feasible trial; the product picks the next trial.

With a **prior** (the finished trials of earlier studies: other tasks, models or devices, each
in its own context), the meta-model is fitted on them, the task and model descriptors telling
the contexts apart, and predicts for this study's context; this study's own trials rescale its
predicted losses (`_task_scale`) and clamp them by monotonicity. Constrained expected
improvement picks from the first trial on: no bisection, and no anchor for a row the prior has
measured. Once this study's losses stray from the rescaled prior by `PRIOR_SPREAD` or more
(another curve shape, `prior_fits`), the prior is dropped and the search goes on as a new one.

Every loss here is the one the search chooses on: on the validation split, or on dev without one
(`autoprumux._selection`; a trial stopped early gives its last stage's dev loss).

`propose` is pure (configurations in, an index out): `GuidedSampler` feeds it from an Optuna
study, benchmarks/search_regret.py from a reference grid.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from autoprumux.config import BASELINE, Candidate
from autoprumux.meta._model import CONTEXT_KEYS, MetaModel, features

log = logging.getLogger("autoprumux.search")

# a constant context: within one study the task, model and device do not vary
_CTX = dict.fromkeys(CONTEXT_KEYS, 0.0)
# a long shot whose chance of being within the budget is below this is not worth a trial
LONG_SHOT_P = 1e-3
# how far (relative) a prior's rescaled losses may stray on a new task: before any of its trials,
# and at least after them
PRIOR_SPREAD = 0.3
MIN_SPREAD = 0.1
# a configuration that failed this many times is not proposed again (one retry)
MAX_FAILURES = 2
# a trained evaluation's cost relative to a conversion before a study has timed both: about
# a separate 2,000-step recovery's over a path snapshot's conversion, scoring and timing on a
# 2-core CPU (BENCHMARKS.md, the pruning path)
TRAINED_COST = 10.0
MAX_COST_RATIO = 1000.0


def loss_noise(size: int | None) -> float:
    """Standard deviation (points) of one measured accuracy on a split of `size` examples (the
    one the search chooses on: validation, else dev) at about 80% accuracy: the binomial spread,
    at least half a point."""
    if not size:
        return 1.0
    return max(0.5, 100.0 * math.sqrt(0.16 / size))


@dataclass(frozen=True)
class PriorTrial:
    """A finished trial of an earlier study, in that study's context (see `meta.context_of`)."""

    config: Candidate
    context: dict[str, Any]
    loss: float
    speedup: float


@dataclass(frozen=True)
class ScoredConfig:
    """One evaluated configuration: its loss (points) and speedup (None if it was pruned early,
    when only a loss is known)."""

    config: Candidate
    loss: float
    speedup: float | None = None


def shadow(cfg: Candidate, measured: Sequence[ScoredConfig], budget: float) -> float:
    """How far (points) the worst measured miss no more aggressive than `cfg` exceeds the budget
    (0 when there is none): a lower bound on cfg's loss beyond the budget, up to noise."""
    return max(
        (m.loss - budget for m in measured if m.loss > budget and m.config.below(cfg)),
        default=0.0,
    )


def long_shot_chance(depth: float, noise: float) -> float:
    """The chance that a configuration shadowed `depth` points beyond the budget measures within
    it: two independent measurements, each with spread `noise`, differ by at least `depth`."""
    return float(_norm_cdf(np.array([-depth / (noise * math.sqrt(2.0))]))[0])


def open_candidates(
    candidates: Sequence[Candidate],
    measured: Sequence[ScoredConfig],
    budget: float,
    noise: float = 1.0,
    busy: Sequence[Candidate] = (),
    failed: Sequence[Candidate] = (),
) -> tuple[list[int], list[int]]:
    """(ordinary, long shots): indices of the candidates not yet measured, in flight, nor failed
    twice, that could still beat the best feasible trial (see the module docstring)."""
    seen = {m.config for m in measured} | set(busy)
    fails: dict[Candidate, int] = {}
    for c in failed:
        fails[c] = fails.get(c, 0) + 1
    best = max((m.speedup for m in measured if m.loss <= budget and m.speedup), default=1.0)
    ordinary, long_shots = [], []
    for i, c in enumerate(candidates):
        if c in seen or fails.get(c, 0) >= MAX_FAILURES or c.is_baseline:
            continue
        if any(m.speedup is not None and m.speedup <= best and c.below(m.config) for m in measured):
            continue  # no more aggressive than a trial no faster than the best: cannot be faster
        depth = shadow(c, measured, budget)
        if depth <= noise:
            ordinary.append(i)
        elif long_shot_chance(depth, noise) >= LONG_SHOT_P:
            long_shots.append(i)
    return ordinary, long_shots


def _bisect(
    candidates: Sequence[Candidate],
    open_idx: list[int],
    measured: Sequence[ScoredConfig],
    budget: float,
) -> int:
    """The middle of the first open family's first open row (`_row_order`) along its sparsity
    (the upper middle: the least aggressive point is rarely the answer). Points beyond a near
    miss (over the budget by less than the margin) stay open but are bisected last."""

    def beyond_miss(i: int) -> bool:
        return any(m.loss > budget and m.config.below(candidates[i]) for m in measured)

    open_idx = [i for i in open_idx if not beyond_miss(i)] or open_idx
    fam = min(candidates[i].family for i in open_idx)
    same = [i for i in open_idx if candidates[i].family == fam]
    row = min(_row_order(candidates[i]) for i in same)
    axis = sorted(
        (i for i in same if _row_order(candidates[i]) == row),
        key=lambda i: candidates[i].aggressiveness,
    )
    return axis[len(axis) // 2]


def _row_order(cfg: Candidate) -> tuple[float, ...]:
    """Which row of a family is bisected (and anchored) first: the least multiplexed (or the
    deepest students) in the fastest precision. A feasible point there rules out every point of
    the slower precisions at its sparsity or below (dominance), and int8 rarely costs more than
    noise, so the answer is most often in that row; bisecting the slowest precision first spent
    a short search's trials on rows a faster one then dominated."""
    a = cfg.aggressiveness
    return (*a[1:-1], -a[-1])


def _row(cfg: Candidate) -> tuple:
    """A family at one N (or student depth) and one precision. A late model's per-instance
    layers are a monotone coordinate inside its row, like sparsity: one anchor per N lets the
    dominance order and the meta-model place the other k, where an anchor per k would spend a
    trial on every (N, k) before the search could use what it learnt."""
    a = cfg.aggressiveness
    return (cfg.family, a[1], a[-1])


def _row_anchor(
    candidates: Sequence[Candidate],
    open_idx: list[int],
    measured: Sequence[ScoredConfig],
    prior: Sequence[PriorTrial] = (),
) -> int | None:
    """The least aggressive open point of the first row (`_row_order`, e.g. N=4 at the lowest
    open sparsity) that holds no measurement yet, here or in the prior: the meta-model cannot
    extrapolate into an unseen N, and one point there often rules the whole row out."""
    touched = {_row(m.config) for m in measured} | {_row(p.config) for p in prior}
    fresh = [i for i in open_idx if _row(candidates[i]) not in touched]
    if not fresh:
        return None
    return min(
        fresh,
        key=lambda i: (candidates[i].family, _row_order(candidates[i]), candidates[i].sparsity),
    )


def _norm_cdf(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.vectorize(math.erf)(z / math.sqrt(2.0)))


def _norm_pdf(z: np.ndarray) -> np.ndarray:
    return np.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)


def acquisition(
    candidates: Sequence[Candidate],
    open_idx: list[int],
    measured: Sequence[ScoredConfig],
    budget: float,
    context: dict[str, Any] | None = None,
    min_sigma: float = 0.5,
    noise: float = 1.0,
    prior: Sequence[PriorTrial] = (),
    prior_model: MetaModel | None = None,
) -> np.ndarray:
    """Constrained expected improvement of each open candidate (same order as `open_idx`).
    `noise`: the spread (points) of one measured loss, e.g. from the dev set's size; `prior`:
    earlier studies' trials, fitted instead of this study's (which then needs its real `context`
    and rescales the prior's losses); `prior_model`: that fit, when the caller already has it."""
    from autoprumux.meta._model import training_table

    ctx = context or _CTX
    done = [m for m in measured if m.speedup is not None]
    if prior:
        meta = prior_model or fit_prior(prior)
    else:
        rows = [(m.config, ctx, m.loss, float(m.speedup or 1.0)) for m in done]
        meta = MetaModel().fit(*training_table(rows))
    Xc = np.array([features(candidates[i], ctx) for i in open_idx], dtype=float)
    med = meta.predict(Xc)
    # the jackknife half-widths cover `coverage` of the errors: as a normal scale
    z80 = 1.2816
    s_loss = np.full(len(open_idx), max(min_sigma, meta.half_width_[0] / z80))
    s_speed = max(0.05, meta.half_width_[1] / z80)
    if prior:  # how far the prior's losses carry over, not how well it fits its own tasks
        loss_scale, spread = _task_scale(meta, done, ctx)
        med[:, 0] *= loss_scale
        s_loss = np.maximum(max(min_sigma, noise), spread * np.abs(med[:, 0]))
    # clamp the predictions into what the measurements imply by monotonicity: a candidate loses
    # at least what any less aggressive trial lost, at most what any more aggressive one lost
    for row, i in enumerate(open_idx):
        for m in measured:
            if m.config.below(candidates[i]):
                if m.loss > budget:  # bounded below by a measured miss, up to two measurements'
                    s_loss[row] = min(s_loss[row], noise * math.sqrt(2.0))  # noise
                med[row, 0] = max(med[row, 0], m.loss)
                if m.speedup is not None:
                    med[row, 1] = max(med[row, 1], m.speedup)
            elif candidates[i].below(m.config):
                med[row, 0] = min(med[row, 0], m.loss)
                if m.speedup is not None:
                    med[row, 1] = min(med[row, 1], m.speedup)
    feasible = [m.speedup for m in done if m.loss <= budget and m.speedup is not None]
    best = math.log(max(feasible)) if feasible else 0.0  # the unpruned model: speedup 1
    p_ok = _norm_cdf((budget - med[:, 0]) / s_loss)
    z = (np.log(med[:, 1]) - best) / s_speed
    ei = s_speed * (z * _norm_cdf(z) + _norm_pdf(z))
    return p_ok * ei


def _task_scale(
    meta: MetaModel, done: Sequence[ScoredConfig], ctx: dict[str, Any]
) -> tuple[float, float]:
    """(factor, relative spread): how much more (or less) accuracy this task loses than the
    prior predicts for it, as the least-squares factor between the prior's predicted and this
    study's measured losses, and how far the measured losses stray from the rescaled prediction
    (relative; `PRIOR_SPREAD` before any trial). Tasks differ mostly in how steeply they lose
    accuracy, less in the curve's shape, which the earlier studies measured over many points."""
    rows = [m for m in done if not m.config.is_baseline]
    if not rows:
        return 1.0, PRIOR_SPREAD
    predicted = meta.predict(np.array([features(m.config, ctx) for m in rows], dtype=float))[:, 0]
    measured = np.array([m.loss for m in rows], dtype=float)
    denominator = float(predicted @ predicted)
    if denominator < 1e-6:  # the prior predicts no loss where this study measured some
        return 1.0, PRIOR_SPREAD
    factor = float(np.clip((predicted @ measured) / denominator, 0.1, 10.0))
    scaled = factor * predicted
    relative = np.abs(measured - scaled) / np.maximum(np.abs(scaled), 1.0)
    return factor, float(np.clip(relative.max(), MIN_SPREAD, PRIOR_SPREAD))


def fit_prior(prior: Sequence[PriorTrial]) -> MetaModel:
    """The meta-model of the earlier studies' trials, each in its own context."""
    from autoprumux.meta._model import training_table

    return MetaModel().fit(
        *training_table([(p.config, p.context, p.loss, p.speedup) for p in prior])
    )


def prior_fits(
    prior_model: MetaModel, measured: Sequence[ScoredConfig], context: dict[str, Any]
) -> bool:
    """Whether this study's trials so far follow the prior's loss curve once rescaled (see
    `_task_scale`): a task that loses accuracy early where the prior's tasks lost it late
    misleads the prior's model more with every trial, and bisection serves it better."""
    done = [m for m in measured if m.speedup is not None]
    return _task_scale(prior_model, done, context)[1] < PRIOR_SPREAD


def propose(
    candidates: Sequence[Candidate],
    measured: Sequence[ScoredConfig],
    budget: float,
    *,
    busy: Sequence[Candidate] = (),
    failed: Sequence[Candidate] = (),
    noise: float = 1.0,
    min_model_trials: int = 3,
    context: dict[str, Any] | None = None,
    prior: Sequence[PriorTrial] = (),
    costs: Sequence[float] | None = None,
) -> int | None:
    """Index of the candidate to evaluate next for `budget`, or None when no open candidate can
    beat the best feasible trial any more (the search has converged for this budget).
    `failed`: one configuration per failed trial; `noise`: see `loss_noise`; `prior`: earlier
    studies' trials (then `context` must be this study's, see the module docstring); `costs`:
    each candidate's relative cost (`evaluation_costs`): bisection and anchors take the
    cheapest open ones first, and constrained expected improvement is weighed per unit of
    cost."""
    if prior and context is None:
        raise ValueError("a prior needs this study's context (its task and model descriptors)")
    known = list(measured)
    if not any(m.config.is_baseline for m in known):
        known.append(ScoredConfig(BASELINE, 0.0, 1.0))
    ordinary, long_shots = open_candidates(candidates, known, budget, noise, busy, failed)
    if not ordinary and not long_shots:
        return None
    trials = sum(m.speedup is not None and not m.config.is_baseline for m in measured)
    prior_model = fit_prior(prior) if prior else None  # once per proposal, for both uses
    if (
        prior_model is not None
        and trials
        and not prior_fits(prior_model, measured, context or _CTX)
    ):
        prior, prior_model = (), None  # this task's curve has another shape: search it as new
    if ordinary:
        cheapest = _cheapest(ordinary, costs)
        if trials < max(2, min_model_trials) and not prior:
            return _bisect(candidates, cheapest, known, budget)
        anchor = _row_anchor(candidates, cheapest, known, prior)
        if anchor is not None:
            return anchor
    elif trials == 0 and not prior:  # nothing to fit a model on: the least shadowed long shot
        return min(long_shots, key=lambda i: shadow(candidates[i], known, budget))
    pool = ordinary + long_shots
    score = acquisition(
        candidates, pool, known, budget, context, noise=noise, prior=prior, prior_model=prior_model
    )
    if costs is not None:  # improvement per unit of cost
        score = score / np.array([costs[i] for i in pool], dtype=float)
    return pool[int(np.argmax(score))]


def _cheapest(idx: list[int], costs: Sequence[float] | None) -> list[int]:
    """The candidates of `idx` in the cheapest cost class (all of them without costs)."""
    if costs is None:
        return idx
    low = min(costs[i] for i in idx)
    return [i for i in idx if costs[i] <= low]


def evaluation_costs(trains: Sequence[bool], seconds: Sequence[tuple[bool, float]]) -> list[float]:
    """Each candidate's cost relative to a cheap evaluation (1.0): a trained one (`trains`, see
    `Recipe.trains_own_model`) costs the study's own ratio once it has timed both kinds (the
    median trained trial over the fastest cheap one, whose first trial also built the shared
    model), `TRAINED_COST` before; `seconds` holds (trains, duration) of finished trials."""
    cheap = [t for own, t in seconds if not own and t > 0]
    trained = [t for own, t in seconds if own and t > 0]
    ratio = float(np.median(trained)) / min(cheap) if cheap and trained else TRAINED_COST
    ratio = min(max(ratio, 1.0), MAX_COST_RATIO)
    return [ratio if own else 1.0 for own in trains]


def load_prior(storage_url: str, names: Sequence[str], exclude: str) -> list[PriorTrial]:
    """The finished trials of the studies `names` in the storage (("all",): every study there
    but `exclude`, the study being searched). A ConfigError says what is true when one is
    missing, is `exclude`, or has no finished trials; a missing SQLite file is not created."""
    from autoprumux import tracking
    from autoprumux.errors import ConfigError
    from autoprumux.meta import load_trials

    if not names:
        return []
    where = tracking.redact_url(storage_url)
    every = tuple(names) == ("all",)
    if exclude in names:
        raise ConfigError(
            f"--prior {exclude}: that is the study this search runs; a prior is other studies' "
            "finished trials: name those, or 'all' for every other study"
        )
    known = _study_names(storage_url)
    unknown = [] if every else [n for n in names if n not in known]
    if unknown:
        held = f"its studies: {_listed(known)}" if known else "it holds no study yet"
        raise ConfigError(
            f"--prior: no study {_listed(unknown)} in {where} ({held}); name studies there, "
            "or run without --prior"
        )
    rows = [
        r for r in load_trials(storage_url, None if every else list(names)) if r["study"] != exclude
    ]
    found = {r["study"] for r in rows}
    if every and not rows:
        others = [n for n in known if n != exclude]
        what = (
            f"the other studies there ({_listed(others)}) have no finished trials yet"
            if others
            else f"it holds no study but {exclude}"
            if known
            else "it holds no study yet"
        )
        raise ConfigError(
            f"--prior all: no other study in {where} has finished trials ({what}); run a search "
            "first, or run without --prior"
        )
    empty = [n for n in names if n not in found and not every]
    if empty:
        verb = "has" if len(empty) == 1 else "have"
        raise ConfigError(
            f"--prior: {_listed(empty)} {verb} no finished trials in {where} yet (none "
            "completed with a measurement); wait for one, or name other studies"
        )
    return [PriorTrial(r["config"], r["context"], r["selection_loss"], r["speedup"]) for r in rows]


def _study_names(storage_url: str) -> list[str]:
    """The studies in the storage; none for a SQLite file that does not exist (not created)."""
    import optuna

    from autoprumux import tracking
    from autoprumux.errors import ConfigError

    if tracking.missing_sqlite_file(storage_url):
        return []
    try:
        return sorted(optuna.get_all_study_names(storage=storage_url))
    except Exception as e:  # noqa: BLE001 - any driver/URL error: name the storage
        raise ConfigError(
            f"cannot read the Optuna storage {tracking.redact_url(storage_url)}: "
            f"{type(e).__name__}: {e}"
        ) from None


def _listed(names: Sequence[str], most: int = 8) -> str:
    shown = ", ".join(names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")


def study_evidence(
    trials: Sequence[Any], exclude_number: int | None = None
) -> tuple[list[ScoredConfig], list[Candidate], list[Candidate]]:
    """(measured, busy, failed) from an Optuna study's trials: a finished trial gives (loss that
    chooses, see `_record.trial_loss`; speedup), a pruned one its loss so far (a lower bound, enough to shadow candidates), a
    running one (another worker's) is `busy` so two workers do not pick the same point, a failed
    one adds its configuration to `failed` (retried once, then left alone)."""
    from autoprumux.search._record import trial_loss

    measured: list[ScoredConfig] = []
    busy: list[Candidate] = []
    failed: list[Candidate] = []
    for t in trials:
        record = t.user_attrs.get("config")
        if record is None or t.number == exclude_number:
            continue
        cfg = Candidate.from_dict(record)
        state = t.state.name
        loss = trial_loss(t)
        if state == "COMPLETE" and loss is not None and t.user_attrs.get("speedup"):
            measured.append(ScoredConfig(cfg, float(loss), float(t.user_attrs["speedup"])))
        elif state == "PRUNED" and loss is not None:
            measured.append(ScoredConfig(cfg, float(loss)))
        elif state == "RUNNING":
            busy.append(cfg)
        elif state == "FAIL":
            failed.append(cfg)
    return measured, busy, failed


def trial_seconds(
    trials: Sequence[Any], grid: Sequence[Candidate], trains: Sequence[bool]
) -> list[tuple[bool, float]]:
    """(whether its configuration trains its own model, seconds) of each finished trial."""
    own = {c: t for c, t in zip(grid, trains, strict=True)}
    out = []
    for t in trials:
        record = t.user_attrs.get("config")
        if t.state.name != "COMPLETE" or record is None or t.duration is None:
            continue
        cfg = Candidate.from_dict(record)
        if cfg in own:
            out.append((own[cfg], t.duration.total_seconds()))
    return out


def make_guided_sampler(
    grid: Sequence[Candidate],
    budget: float,
    param: str,
    seed: int = 0,
    noise: float = 1.0,
    prior: Sequence[PriorTrial] = (),
    context: Callable[[], dict[str, Any]] | None = None,
    trains: Sequence[bool] | None = None,
) -> Any:
    """An Optuna sampler that answers the categorical `param` (an index into `grid`) with
    `propose`; once the search has converged for `budget` it samples an unmeasured point at
    random (more data for the meta-model), and any other parameter at random. `context` is
    called when a trial is proposed (the study's context holds the baseline's metric, known
    only once the baseline is trained); it is needed with a `prior`. `trains`: per grid point,
    whether it trains a model of its own (`Recipe.trains_own_model`): the cheap ones are
    searched first and the rest weighed by cost (`evaluation_costs`, timed on the study's
    own trials)."""
    import optuna

    class GuidedSampler(optuna.samplers.BaseSampler):
        def __init__(self) -> None:
            self._random = optuna.samplers.RandomSampler(seed=seed)
            self._rng = np.random.default_rng(seed)
            self._converged = False

        def infer_relative_search_space(self, study: Any, trial: Any) -> dict[str, Any]:
            return {}

        def sample_relative(self, study: Any, trial: Any, search_space: Any) -> dict[str, Any]:
            return {}

        def sample_independent(
            self, study: Any, trial: Any, param_name: str, param_distribution: Any
        ) -> Any:
            if param_name != param:
                return self._random.sample_independent(study, trial, param_name, param_distribution)
            history = study.get_trials(deepcopy=False)
            measured, busy, failed = study_evidence(history, trial.number)
            costs = None
            if trains is not None and any(trains) and not all(trains):
                costs = evaluation_costs(trains, trial_seconds(history, grid, trains))
            i = propose(
                grid,
                measured,
                budget,
                busy=busy,
                failed=failed,
                noise=noise,
                prior=prior,
                context=context() if context is not None else None,
                costs=costs,
            )
            if i is None:
                if not self._converged:
                    self._converged = True
                    log.warning(
                        "guided search converged for budget %g: no open configuration can beat "
                        "the best trial within it; further trials sample unmeasured points at "
                        "random (more data for the meta-model)",
                        budget,
                    )
                seen = {m.config for m in measured} | set(busy)
                rest = [
                    j
                    for j, c in enumerate(grid)
                    if c not in seen and failed.count(c) < MAX_FAILURES
                ]
                i = int(self._rng.choice(rest)) if rest else int(self._rng.integers(len(grid)))
            return i

    return GuidedSampler()
