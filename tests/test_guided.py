"""The budget-guided sampler: dominance, bisection and constrained expected improvement, on
synthetic monotone grids (where the truth is known) and inside a real Optuna RDB study."""

from __future__ import annotations

import math

import optuna
import pytest

from autoprumux.search._guided import (
    Measured,
    make_guided_sampler,
    open_candidates,
    propose,
    study_evidence,
)

SPARSITIES = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]


def prumux_grid(loss_at, speed_at) -> tuple[list[dict], dict]:
    cands = [{"sparsity": s, "mux": n} for n in (1, 2, 4) for s in SPARSITIES]
    truth = {(c["sparsity"], c["mux"]): (loss_at(**c), speed_at(**c)) for c in cands}
    return cands, truth


def smooth_loss(sparsity: float, mux: int) -> float:
    return 12.0 * sparsity**2 + 2.5 * math.log2(mux) - 0.2


def speedup(sparsity: float, mux: int) -> float:
    return (1.0 / (1.0 - 0.9 * sparsity)) * mux**0.8


def run_guided(cands, truth, budget, evals):
    seen: list[Measured] = []
    for _ in range(evals):
        i = propose(cands, seen, budget)
        if i is None:
            break
        loss, sp = truth[(cands[i]["sparsity"], cands[i]["mux"])]
        seen.append(Measured(cands[i], loss, sp))
    return seen


@pytest.mark.parametrize("budget", [1.0, 3.0, 5.0])
def test_guided_finds_the_fastest_feasible_point_in_a_third_of_the_grid(budget):
    cands, truth = prumux_grid(smooth_loss, speedup)
    best = max(sp for loss, sp in truth.values() if loss <= budget)
    seen = run_guided(cands, truth, budget, evals=len(cands) // 3)
    found = max(m.speedup for m in seen if m.loss <= budget)
    assert found == pytest.approx(best), [(m.config, m.loss) for m in seen]
    assert len({(m.config["sparsity"], m.config["mux"]) for m in seen}) == len(seen)


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
    assert (found.config["sparsity"], found.config["mux"]) == best[0]


def test_dominance_rules_out_what_measurements_already_decide():
    cands = [{"sparsity": s, "mux": n} for n in (1, 2) for s in (0.0, 0.3, 0.6)]
    # (0.3, N=1) is 4 points over a 1-point budget: it and everything more aggressive are out
    over = [Measured({"sparsity": 0.3, "mux": 1}, 5.0, 1.5)]
    left = [cands[i] for i in open_candidates(cands, over, budget=1.0)]
    assert left == [{"sparsity": 0.0, "mux": 1}, {"sparsity": 0.0, "mux": 2}]
    # within the margin (1 point) a near miss rules out nothing but itself
    near = [Measured({"sparsity": 0.3, "mux": 1}, 1.5, 1.5)]
    assert len(open_candidates(cands, near, budget=1.0)) == 5
    # a feasible (0.3, N=1) makes (0, N=1) pointless: it cannot be faster
    ok = [Measured({"sparsity": 0.3, "mux": 1}, 0.5, 1.5)]
    left = [cands[i] for i in open_candidates(cands, ok, budget=1.0)]
    assert {"sparsity": 0.0, "mux": 1} not in left and {"sparsity": 0.6, "mux": 1} in left
    # students: fewer or shallower is more aggressive
    studs = [{"technique": "students", "students": k, "student_depth": 2} for k in (1, 2, 3)]
    bad = [Measured(studs[1], 9.0, 3.0)]
    assert [studs[i]["students"] for i in open_candidates(studs, bad, budget=1.0)] == [3]
    # a configuration in flight on another worker is not proposed twice
    assert propose(cands, [], 1.0, busy=[cands[1]]) != 1


def test_converged_search_says_so():
    cands = [{"sparsity": s, "mux": 1} for s in (0.0, 0.5)]
    seen = [Measured(cands[0], 0.0, 1.0), Measured(cands[1], 9.0, 2.0)]
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
    other.set_user_attr("config", cands[3])
    picked = []
    for k in range(8):
        t = study.ask()
        i = t.suggest_categorical("grid_point", idx)
        cfg = cands[i]
        t.set_user_attr("config", cfg)
        loss, sp = truth[(cfg["sparsity"], cfg["mux"])]
        t.set_user_attr("accuracy_loss", loss)
        if k == 0 or loss <= 15:
            t.set_user_attr("speedup", sp)
            study.tell(t, sp)
        else:  # what the searcher's pruner leaves: a loss, no speedup
            study.tell(t, state=optuna.trial.TrialState.PRUNED)
        picked.append(i)
    assert 3 not in picked  # never the in-flight configuration
    assert len(set(picked)) == len(picked)
    measured, busy = study_evidence(study.get_trials())
    assert busy == [cands[3]] and len(measured) == 8
    best = max(sp for loss, sp in truth.values() if loss <= budget)
    assert max(m.speedup for m in measured if m.speedup and m.loss <= budget) == pytest.approx(best)


def test_the_sampler_says_when_it_has_converged(caplog):
    cands = [{"sparsity": s, "mux": 1} for s in (0.0, 0.5, 0.9)]
    loss = {0.0: 0.0, 0.5: 9.0, 0.9: 20.0}
    study = optuna.create_study(
        direction="maximize", sampler=make_guided_sampler(cands, 1.0, "grid_point", seed=0)
    )
    picked = []
    for _ in range(3):
        t = study.ask()
        i = t.suggest_categorical("grid_point", [0, 1, 2])
        c = cands[i]
        t.set_user_attr("config", c)
        t.set_user_attr("accuracy_loss", loss[c["sparsity"]])
        t.set_user_attr("speedup", 1.0 + c["sparsity"])
        study.tell(t, 1.0 + c["sparsity"])
        picked.append(i)
    # 0.5 is 8 points over: 0.9 is ruled out, 0.0 is the answer; the third trial is a random
    # point not measured yet, and the user is told why
    assert picked[:2] == [1, 0] and picked[2] == 2
    assert "converged for budget 1" in caplog.text
