"""The budget-guided sampler: dominance, bisection and constrained expected improvement, on
synthetic monotone grids (where the truth is known) and inside a real Optuna RDB study."""

from __future__ import annotations

import math

import optuna
import pytest

from autoprumux.config import Candidate
from autoprumux.search._guided import (
    TRAINED_COST,
    PriorTrial,
    ScoredConfig,
    evaluation_costs,
    make_guided_sampler,
    open_candidates,
    propose,
    study_evidence,
)

SPARSITIES = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]


def prumux_grid(loss_at, speed_at) -> tuple[list[dict], dict]:
    cands = [Candidate(sparsity=s, mux=n) for n in (1, 2, 4) for s in SPARSITIES]
    truth = {
        (c.sparsity, c.mux): (loss_at(c.sparsity, c.mux), speed_at(c.sparsity, c.mux))
        for c in cands
    }
    return cands, truth


def smooth_loss(sparsity: float, mux: int) -> float:
    return 12.0 * sparsity**2 + 2.5 * math.log2(mux) - 0.2


def speedup(sparsity: float, mux: int) -> float:
    return (1.0 / (1.0 - 0.9 * sparsity)) * mux**0.8


def run_guided(cands, truth, budget, evals, costs=None):
    seen: list[ScoredConfig] = []
    for _ in range(evals):
        i = propose(cands, seen, budget, costs=costs)
        if i is None:
            break
        loss, sp = truth[(cands[i].sparsity, cands[i].mux)]
        seen.append(ScoredConfig(cands[i], loss, sp))
    return seen


@pytest.mark.parametrize("budget", [1.0, 3.0, 5.0])
def test_guided_finds_the_fastest_feasible_point_in_a_third_of_the_grid(budget):
    cands, truth = prumux_grid(smooth_loss, speedup)
    best = max(sp for loss, sp in truth.values() if loss <= budget)
    seen = run_guided(cands, truth, budget, evals=len(cands) // 3)
    found = max(m.speedup for m in seen if m.loss <= budget)
    assert found == pytest.approx(best), [(m.config, m.loss) for m in seen]
    assert len({(m.config.sparsity, m.config.mux) for m in seen}) == len(seen)


def test_the_boundary_at_a_wider_mux_is_found_too():
    # multiplexing is cheap here: the answer for a 3-point budget is at N=2, not N=1
    cands, truth = prumux_grid(
        lambda sparsity, mux: 20.0 * sparsity**2 + 0.8 * math.log2(mux),
        lambda sparsity, mux: (1.0 / (1.0 - 0.5 * sparsity)) * mux**0.9,
    )
    budget = 3.0
    best = max(truth.items(), key=lambda kv: kv[1][1] if kv[1][0] <= budget else -1)
    assert best[0][1] > 1
    seen = run_guided(cands, truth, budget, evals=len(cands) // 3)
    found = max((m for m in seen if m.loss <= budget), key=lambda m: m.speedup)
    assert (found.config.sparsity, found.config.mux) == best[0]


def _cfgs(cands, idx):
    return [(cands[i].sparsity, cands[i].mux) for i in idx]


def test_dominance_shadows_what_measurements_make_unlikely():
    cands = [Candidate(sparsity=s, mux=n) for n in (1, 2) for s in (0.0, 0.3, 0.6)]
    # (0.3, N=1) is 4 points over a 1-point budget: everything at least as aggressive becomes a
    # long shot (measured losses are noisy), not removed; the baseline is never proposed
    over = [ScoredConfig(Candidate(sparsity=0.3, mux=1), 5.0, 1.5)]
    ordinary, long_shots = open_candidates(cands, over, budget=1.0, noise=1.0)
    assert _cfgs(cands, ordinary) == [(0.0, 2)]
    assert _cfgs(cands, long_shots) == [(0.6, 1), (0.3, 2), (0.6, 2)]
    # far beyond any noise (19 points over) they are dropped
    far = [ScoredConfig(Candidate(sparsity=0.3, mux=1), 20.0, 1.5)]
    ordinary, long_shots = open_candidates(cands, far, budget=1.0, noise=1.0)
    assert _cfgs(cands, ordinary) == [(0.0, 2)] and long_shots == []
    # within the noise a near miss shadows nothing
    near = [ScoredConfig(Candidate(sparsity=0.3, mux=1), 1.5, 1.5)]
    ordinary, long_shots = open_candidates(cands, near, budget=1.0, noise=1.0)
    assert len(ordinary) == 4 and long_shots == []
    # a feasible (0.3, N=1) makes (0, N=1) pointless: it cannot be faster
    ok = [ScoredConfig(Candidate(sparsity=0.3, mux=1), 0.5, 1.5)]
    left = _cfgs(cands, open_candidates(cands, ok, budget=1.0)[0])
    assert (0.0, 1) not in left and (0.6, 1) in left
    # and so is anything below a measured point no faster than the best feasible one
    slow = [*ok, ScoredConfig(Candidate(sparsity=0.3, mux=2), 9.0, 1.2)]
    left = _cfgs(cands, sum(open_candidates(cands, slow, budget=1.0), []))
    assert (0.0, 2) not in left and (0.6, 1) in left
    # students: fewer or shallower is more aggressive
    studs = [Candidate(technique="students", students=k, student_depth=2) for k in (1, 2, 3)]
    bad = [ScoredConfig(studs[1], 9.0, 3.0)]
    assert [studs[i].students for i in open_candidates(studs, bad, budget=1.0)[0]] == [3]
    # a configuration in flight on another worker is not proposed twice
    assert propose(cands, [], 1.0, busy=[cands[2]]) != 2


def test_a_lucky_point_beyond_a_miss_is_still_found():
    """Measured losses are not monotone: on the SST-2 reference grid s=0.9 N=1 lost 15.60 points
    and s=0.95 N=1 9.29 at 11.91x. A budget of 10 must still reach s=0.95 (it used to be ruled
    out for ever by the miss at 0.9)."""
    table = {
        (0.0, 1): (0.0, 1.0), (0.3, 1): (-0.2, 1.4), (0.5, 1): (2.4, 2.0), (0.6, 1): (5.4, 2.6),
        (0.7, 1): (6.1, 3.4), (0.8, 1): (8.5, 4.7), (0.9, 1): (15.6, 9.9), (0.95, 1): (9.3, 11.9),
        (0.0, 2): (7.6, 1.7), (0.5, 2): (10.7, 3.5), (0.9, 2): (19.5, 15.9),
        (0.95, 2): (21.0, 21.8),
    }  # fmt: skip
    cands = [Candidate(sparsity=s, mux=n) for s, n in table]
    seen: list[ScoredConfig] = []
    for _ in range(len(cands)):
        i = propose(cands, seen, 10.0, noise=1.35)
        if i is None:
            break
        seen.append(ScoredConfig(cands[i], *table[(cands[i].sparsity, cands[i].mux)]))
    assert (0.95, 1) in [(m.config.sparsity, m.config.mux) for m in seen]


def test_a_failing_configuration_is_retried_once_then_left_alone():
    cands = [Candidate(sparsity=s, mux=1) for s in (0.0, 0.3, 0.6, 0.9)]
    first = propose(cands, [], 2.0)
    assert first is not None
    # one failure: it may be proposed again (a retry)
    assert propose(cands, [], 2.0, failed=[cands[first]]) == first
    # two failures: never again
    again = propose(cands, [], 2.0, failed=[cands[first], cands[first]])
    assert again is not None and again != first
    # through a real Optuna study: a configuration that always fails takes at most two trials
    study = optuna.create_study(
        direction="maximize", sampler=make_guided_sampler(cands, 2.0, "grid_point", seed=0)
    )
    picked = []
    for _ in range(5):
        t = study.ask()
        i = t.suggest_categorical("grid_point", list(range(len(cands))))
        t.set_user_attr("config", cands[i].to_dict())
        study.tell(t, state=optuna.trial.TrialState.FAIL)
        picked.append(i)
    assert max(picked.count(i) for i in set(picked)) <= 2, picked
    assert len(set(picked)) >= 3


def test_converged_search_says_so():
    cands = [Candidate(sparsity=s, mux=1) for s in (0.0, 0.5)]
    seen = [ScoredConfig(cands[1], 9.0, 2.0)]  # the baseline is known without a trial
    assert propose(cands, seen, budget=1.0) is None


def test_the_sampler_drives_a_real_optuna_study(tmp_path):
    cands, truth = prumux_grid(smooth_loss, speedup)
    budget = 2.0
    storage = f"sqlite:///{tmp_path / 'g.db'}"
    sampler = make_guided_sampler(cands, budget, "grid_point", seed=0)
    study = optuna.create_study(storage=storage, direction="maximize", sampler=sampler)
    idx = list(range(len(cands)))
    # another worker holds a trial: its configuration is busy
    other = study.ask()
    other.set_user_attr("config", cands[3].to_dict())
    picked = []
    for k in range(8):
        t = study.ask()
        i = t.suggest_categorical("grid_point", idx)
        cfg = cands[i]
        t.set_user_attr("config", cfg.to_dict())
        loss, sp = truth[(cfg.sparsity, cfg.mux)]
        t.set_user_attr("accuracy_loss", loss)
        if k == 0 or loss <= 15:
            t.set_user_attr("speedup", sp)
            study.tell(t, sp)
        else:  # what the searcher's pruner leaves: a loss, no speedup
            study.tell(t, state=optuna.trial.TrialState.PRUNED)
        picked.append(i)
    assert 3 not in picked  # never the in-flight configuration
    assert len(set(picked)) == len(picked)
    measured, busy, failed = study_evidence(study.get_trials())
    assert busy == [cands[3]] and len(measured) == 8 and failed == []
    best = max(sp for loss, sp in truth.values() if loss <= budget)
    assert max(m.speedup for m in measured if m.speedup and m.loss <= budget) == pytest.approx(best)


def test_the_sampler_says_when_it_has_converged(caplog):
    cands = [Candidate(sparsity=s, mux=1) for s in (0.0, 0.5, 0.9)]
    loss = {0.0: 0.0, 0.5: 9.0, 0.9: 20.0}
    study = optuna.create_study(
        direction="maximize", sampler=make_guided_sampler(cands, 1.0, "grid_point", seed=0)
    )
    picked = []
    for _ in range(3):
        t = study.ask()
        i = t.suggest_categorical("grid_point", [0, 1, 2])
        c = cands[i]
        t.set_user_attr("config", c.to_dict())
        t.set_user_attr("accuracy_loss", loss[c.sparsity])
        t.set_user_attr("speedup", 1.0 + c.sparsity)
        study.tell(t, 1.0 + c.sparsity)
        picked.append(i)
    # the baseline (0.0) is known; 0.9 (the upper middle) is 19 points over, 0.5 is 8 over: no
    # open point is left, so the third trial is a random point not measured yet (the baseline),
    # and the user is told why
    assert picked == [2, 1, 0]
    assert "converged for budget 1" in caplog.text


def _context(task_mcc: float, baseline: float) -> dict:
    from autoprumux.meta._model import CONTEXT_KEYS

    ctx = dict.fromkeys(CONTEXT_KEYS, 1.0)
    ctx.update(task_mcc=task_mcc, baseline_metric=baseline)
    return ctx


def _prior_from(truth, ctx) -> list[PriorTrial]:
    return [
        PriorTrial(Candidate(sparsity=s, mux=n), ctx, loss, sp)
        for (s, n), (loss, sp) in truth.items()
        if (s, n) != (0.0, 1)
    ]


def test_a_prior_from_a_similar_task_finds_the_answer_in_fewer_trials():
    cands, truth = prumux_grid(smooth_loss, speedup)
    # the earlier task lost a little less at every point (another task: its own context)
    _, earlier = prumux_grid(lambda s, n: smooth_loss(s, n) - 0.3, speedup)
    prior = _prior_from(earlier, _context(0.0, 90.0))
    here = _context(0.0, 85.0)

    def found_within_3(budget: float, **kw) -> bool:
        seen: list[ScoredConfig] = []
        for _ in range(3):
            i = propose(cands, seen, budget, **kw)
            if i is None:
                break
            loss, sp = truth[(cands[i].sparsity, cands[i].mux)]
            seen.append(ScoredConfig(cands[i], loss, sp))
        best = max(sp for loss, sp in truth.values() if loss <= budget)
        got = max((m.speedup for m in seen if m.loss <= budget), default=1.0)
        return got == pytest.approx(best)

    budgets = [0.5, 1.0, 2.0, 3.0, 5.0]
    with_prior = [found_within_3(b, prior=prior, context=here) for b in budgets]
    plain = [found_within_3(b) for b in budgets]
    # more budgets answered right within 3 trials than bisection answers
    assert sum(with_prior) > sum(plain), (with_prior, plain)
    # the first proposal is the model's, not the middle of N=1's axis
    first_plain = propose(cands, [], 2.0)
    first_prior = propose(cands, [], 2.0, prior=prior, context=here)
    assert cands[first_plain] == Candidate(sparsity=0.5, mux=1)
    assert first_prior != first_plain


def test_a_prior_needs_the_studys_context():
    cands, truth = prumux_grid(smooth_loss, speedup)
    with pytest.raises(ValueError, match="context"):
        propose(cands, [], 2.0, prior=_prior_from(truth, _context(0.0, 90.0)))


def mux_friendly_loss(sparsity: float, mux: int) -> float:
    return 20.0 * sparsity**2 + 0.8 * math.log2(mux)


def mux_friendly_speedup(sparsity: float, mux: int) -> float:
    return (1.0 / (1.0 - 0.5 * sparsity)) * mux**0.9


def _cost_to_answer(seen, costs, cands, budget, best):
    """The summed cost of the trials up to the one that measured the answer (None: never)."""
    spent = 0.0
    for m in seen:
        spent += costs[cands.index(m.config)]
        if m.loss <= budget and m.speedup == pytest.approx(best):
            return spent
    return None


def test_evaluation_costs_come_from_the_studys_own_timings():
    trains = [False, True, False, True]
    # before both kinds are timed: the default ratio
    assert evaluation_costs(trains, []) == [1.0, TRAINED_COST, 1.0, TRAINED_COST]
    assert evaluation_costs(trains, [(False, 30.0)]) == [1.0, TRAINED_COST, 1.0, TRAINED_COST]
    # the first cheap trial also built the shared model: the fastest cheap one is the unit
    timed = [(False, 600.0), (False, 30.0), (False, 45.0), (True, 900.0), (True, 1500.0)]
    assert evaluation_costs(trains, timed) == [1.0, 40.0, 1.0, 40.0]
    # a trained trial never counts as cheaper than a conversion
    assert evaluation_costs(trains, [(False, 60.0), (True, 20.0)])[1] == 1.0


def test_cheap_candidates_are_bisected_and_anchored_first():
    cands, truth = prumux_grid(smooth_loss, speedup)
    trains = [c.mux > 1 for c in cands]  # a path recipe: N=1 snapshots are conversions
    costs = evaluation_costs(trains, [])
    seen = run_guided(cands, truth, 3.0, evals=4, costs=costs)
    assert all(m.config.mux == 1 for m in seen), [(m.config.sparsity, m.config.mux) for m in seen]
    # without costs the fourth trial is the N=2 row's anchor
    plain = run_guided(cands, truth, 3.0, evals=4)
    assert any(m.config.mux > 1 for m in plain)


def test_weighing_by_cost_reaches_the_answer_for_less():
    """Over two loss surfaces and several budgets, the cost spent until the answer is measured
    is never more than one cheap trial above the cost-blind search's, and less in sum."""
    aware_total = plain_total = 0.0
    for loss_at, speed_at, budgets in (
        (smooth_loss, speedup, (3.0,)),
        (mux_friendly_loss, mux_friendly_speedup, (0.5, 1.0, 5.0)),
    ):
        cands, truth = prumux_grid(loss_at, speed_at)
        costs = evaluation_costs([c.mux > 1 for c in cands], [])
        for budget in budgets:
            best = max(sp for loss, sp in truth.values() if loss <= budget)
            aware = _cost_to_answer(
                run_guided(cands, truth, budget, 20, costs), costs, cands, budget, best
            )
            plain = _cost_to_answer(
                run_guided(cands, truth, budget, 20), costs, cands, budget, best
            )
            assert aware is not None and plain is not None
            assert aware <= plain + 1.0, (budget, aware, plain)
            aware_total += aware
            plain_total += plain
    assert aware_total < plain_total


def test_the_sampler_weighs_trained_points_by_cost(tmp_path):
    cands, truth = prumux_grid(smooth_loss, speedup)
    trains = [c.mux > 1 for c in cands]
    sampler = make_guided_sampler(cands, 3.0, "grid_point", seed=0, trains=trains)
    study = optuna.create_study(
        storage=f"sqlite:///{tmp_path / 'g.db'}", direction="maximize", sampler=sampler
    )
    picked = []
    for _ in range(4):
        t = study.ask()
        cfg = cands[t.suggest_categorical("grid_point", list(range(len(cands))))]
        t.set_user_attr("config", cfg.to_dict())
        loss, sp = truth[(cfg.sparsity, cfg.mux)]
        t.set_user_attr("accuracy_loss", loss)
        t.set_user_attr("speedup", sp)
        study.tell(t, sp)
        picked.append(cfg.mux)
    assert picked == [1, 1, 1, 1]


def test_the_fastest_precision_is_bisected_first():
    """Over the quick space (four precisions, two runtimes), int8 costing 0.3 points: a 5-trial
    search starts in the fastest precision's row and reaches its fastest feasible point; one
    that bisected the slowest precision first spent its trials on rows the faster one rules out."""
    precisions = {"fp32": 1.0, "int8": 2.3, "ov-fp32": 2.3, "ov-int8": 6.0}
    sparsities = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
    cands = [Candidate(sparsity=s, precision=p) for p in precisions for s in sparsities]

    def truth(c: Candidate) -> tuple[float, float]:
        loss = 12.0 * c.sparsity**2 + (0.3 if c.precision.endswith("int8") else 0.0)
        return loss, precisions[c.precision] / (1.0 - 0.9 * c.sparsity)

    seen: list[ScoredConfig] = []
    for _ in range(5):
        i = propose(cands, seen, 2.0)
        assert i is not None
        seen.append(ScoredConfig(cands[i], *truth(cands[i])))
    assert seen[0].config.precision == "ov-int8", seen[0].config
    best = max((truth(c) for c in cands if truth(c)[0] <= 2.0), key=lambda t: t[1])
    assert max(m.speedup for m in seen if m.loss <= 2.0) == pytest.approx(best[1])
