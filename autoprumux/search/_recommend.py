"""Recommend: the fastest configuration predicted (or measured) to stay within an accuracy budget.

The meta-model is trained on every finished trial of the studies in a storage (several tasks,
models and devices can share one model: the context is in the features). A configuration is
feasible when its pessimistic (high-quantile) predicted accuracy loss is within the budget; a
configuration that was measured uses its measured loss instead. Among feasible configurations of
every technique in the study's space (PruMUX and/or students) the one with the highest predicted
(or measured) speedup wins; N=1 at sparsity 0 (the baseline) is always feasible, so a
recommendation always exists.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from autoprumux.errors import ConfigError
from autoprumux.search._meta import MetaModel, training_table
from autoprumux.search._study import check_budget, default_storage


@dataclass(frozen=True)
class Interval:
    low: float
    high: float


@dataclass(frozen=True)
class MeasuredTrial:
    study: str
    number: int
    accuracy_loss: float
    speedup: float
    mlflow_run_id: str | None


@dataclass(frozen=True)
class Recommendation:
    budget: float
    task: str
    model: str
    device: str
    technique: str
    sparsity: float
    mux: int
    mux_variant: str
    students: int
    student_depth: int
    predicted_accuracy_loss: float
    accuracy_loss_interval: Interval
    predicted_speedup: float
    speedup_interval: Interval
    measured: MeasuredTrial | None
    trials_used: int

    def to_dict(self) -> dict:
        return asdict(self)

    def config_line(self) -> str:
        if self.technique == "students":
            return f"  {self.students} students of depth {self.student_depth} (Academus)"
        return f"  sparsity {self.sparsity:g}, N={self.mux}, mux variant {self.mux_variant}"

    def describe(self) -> str:
        lo, hi = self.accuracy_loss_interval, self.speedup_interval
        m = self.measured
        meas = (
            f"\n  measured (trial {m.number} of {m.study}): loss {m.accuracy_loss:.2f} pts, "
            f"speedup {m.speedup:.2f}x"
            if m
            else "\n  not measured yet: run `autoprumux evaluate` with this configuration"
        )
        return (
            f"budget {self.budget:g} pts on {self.task} ({self.model}, {self.device}):\n"
            + self.config_line()
            + "\n"
            f"  predicted accuracy loss {self.predicted_accuracy_loss:.2f} pts "
            f"[{lo.low:.2f}, {lo.high:.2f}], speedup {self.predicted_speedup:.2f}x "
            f"[{hi.low:.2f}, {hi.high:.2f}] (meta-model on {self.trials_used} trials)" + meas
        )


def context_of(study_attrs: dict[str, Any], baseline_metric: float) -> dict[str, Any]:
    d = study_attrs.get("descriptors", {})
    return {**d, "baseline_metric": baseline_metric}


def load_trials(storage: str | None, study_names: list[str] | None = None) -> list[dict[str, Any]]:
    """Finished (COMPLETE) trials of every study in `storage` as flat records."""
    import optuna

    from autoprumux.search._tracking import missing_sqlite_file

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = storage or default_storage()
    if missing_sqlite_file(url):
        return []
    try:
        summaries = optuna.get_all_study_summaries(storage=url, include_best_trial=False)
    except Exception as e:  # noqa: BLE001
        raise ConfigError(
            f"cannot read the Optuna storage {url!r}: {type(e).__name__}: {e}"
        ) from None
    out = []
    for summ in summaries:
        if study_names and summ.study_name not in study_names:
            continue
        st = optuna.load_study(study_name=summ.study_name, storage=url)
        attrs = st.user_attrs
        if "space" not in attrs:
            continue  # not an autoprumux study
        for t in st.get_trials(deepcopy=False):
            if t.state.name != "COMPLETE" or "accuracy_loss" not in t.user_attrs:
                continue
            ua = t.user_attrs
            out.append(
                {
                    "study": summ.study_name,
                    "number": t.number,
                    "task": attrs["task"],
                    "model": attrs["model"],
                    "device": attrs["device"],
                    "space": attrs["space"],
                    "config": dict(ua["config"]),
                    "context": context_of(attrs, float(ua["baseline_accuracy"])),
                    "accuracy_loss": float(ua["accuracy_loss"]),
                    "speedup": float(ua["speedup"]),
                    "mlflow_run_id": ua.get("mlflow_run_id"),
                }
            )
    return out


def fit_meta_model(trials: list[dict[str, Any]], **kw: Any) -> MetaModel:
    X, y = training_table(
        [(t["config"], t["context"], t["accuracy_loss"], t["speedup"]) for t in trials]
    )
    return MetaModel(**kw).fit(X, y)


def candidates_for(space: dict[str, Any]) -> list[dict[str, Any]]:
    from autoprumux.search._space import SearchSpace

    return SearchSpace.from_dict(space).grid()


def choose(
    budget: float,
    meta: MetaModel,
    cands: list[dict[str, Any]],
    context: dict[str, Any],
    measured: dict[tuple, dict[str, Any]],
) -> tuple[dict[str, Any], Any, Any, Any]:
    """Best candidate for `budget`: returns (config, median, low, high) predictions."""
    import numpy as np

    from autoprumux.search._meta import features

    X = np.array([features(c, context) for c in cands], dtype=float)
    med = meta.predict(X)
    lo, hi = meta.predict_interval(X)
    best, best_speed = None, -math.inf
    for i, c in enumerate(cands):
        m = measured.get(_ckey(c))
        baseline_cfg = (
            c.get("technique", "prumux") == "prumux" and c["sparsity"] == 0.0 and c["mux"] == 1
        )
        if m is not None:
            loss_ok = m["accuracy_loss"] <= budget and hi[i, 0] <= budget + 0.5 * max(1.0, budget)
            speed = m["speedup"]
        else:
            loss_ok = hi[i, 0] <= budget
            speed = med[i, 1]
        if baseline_cfg:
            loss_ok, speed = True, (m["speedup"] if m else 1.0)
        if loss_ok and speed > best_speed:
            best, best_speed = i, speed
    assert best is not None
    return cands[best], med[best], lo[best], hi[best]


def _measured_means(rows: list[dict[str, Any]]) -> dict[tuple, dict[str, Any]]:
    """Per configuration: the latest trial, with loss and speedup averaged over repeats."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for t in sorted(rows, key=lambda r: r["number"]):
        groups.setdefault(_ckey(t["config"]), []).append(t)
    return {
        k: {
            **g[-1],
            "accuracy_loss": sum(x["accuracy_loss"] for x in g) / len(g),
            "speedup": sum(x["speedup"] for x in g) / len(g),
        }
        for k, g in groups.items()
    }


def _ckey(c: dict[str, Any]) -> tuple:
    return (
        c.get("technique", "prumux"),
        round(float(c.get("sparsity", 0.0)), 6),
        int(c.get("mux", 1)),
        c.get("mux_variant", "gaussian"),
        int(c.get("students", 0)),
        int(c.get("student_depth", 0)),
    )


@dataclass
class StudyEntry:
    study: str
    task: str
    model: str
    device: str
    context: dict[str, Any]
    candidates: list[dict[str, Any]]
    measured: dict[tuple, dict[str, Any]]


class Recommender:
    """A fitted meta-model plus, per study, its context, candidate grid and measured trials.
    Picklable: the served MLflow model is this object."""

    def __init__(self, trials: list[dict[str, Any]], **meta_kw: Any):
        if not trials:
            raise ConfigError("no finished trials to build a recommender from; run a search first")
        self.meta = fit_meta_model(trials, **meta_kw)
        self.trials_used = len(trials)
        by_study: dict[str, list[dict[str, Any]]] = {}
        for t in trials:
            by_study.setdefault(t["study"], []).append(t)
        self.entries = [
            StudyEntry(
                study=name,
                task=rows[0]["task"],
                model=rows[0]["model"],
                device=rows[0]["device"],
                context=rows[0]["context"],
                candidates=candidates_for(rows[0]["space"]),
                measured=_measured_means(rows),
            )
            for name, rows in by_study.items()
        ]

    def _entry(self, task: str | None, model: str | None, device: str | None) -> StudyEntry:
        """The study matching the filters that measured the most configurations."""
        match = [
            e
            for e in self.entries
            if (task is None or e.task == task)
            and (model is None or model in e.model)
            and (device is None or e.device == device)
        ]
        if not match:
            seen = sorted({(e.task, e.device) for e in self.entries})
            raise ConfigError(
                f"no finished trials for task={task!r}, model={model!r}, device={device!r}; "
                f"the studies cover (task, device) {seen}. Run a search for it first."
            )
        return max(match, key=lambda x: len(x.measured))

    def predict(
        self,
        configs: list[dict[str, Any]],
        task: str | None = None,
        *,
        model: str | None = None,
        device: str | None = None,
    ) -> tuple[Any, Any, Any]:
        """The meta-model's (median, low, high) predictions, each (n, 2) = [accuracy loss,
        speedup], for any configurations in the context of the matching study."""
        import numpy as np

        from autoprumux.search._meta import features

        e = self._entry(task, model, device)
        X = np.array([features(c, e.context) for c in configs], dtype=float)
        lo, hi = self.meta.predict_interval(X)
        return self.meta.predict(X), lo, hi

    def recommend(
        self,
        budget: float,
        task: str | None = None,
        *,
        model: str | None = None,
        device: str | None = None,
    ) -> Recommendation:
        budget = check_budget(budget)
        e = self._entry(task, model, device)
        cfg, med, lo, hi = choose(budget, self.meta, e.candidates, e.context, e.measured)
        m = e.measured.get(_ckey(cfg))
        return Recommendation(
            budget=budget,
            task=e.task,
            model=e.model,
            device=e.device,
            technique=str(cfg.get("technique", "prumux")),
            sparsity=float(cfg["sparsity"]),
            mux=int(cfg["mux"]),
            mux_variant=str(cfg["mux_variant"]),
            students=int(cfg.get("students", 0)),
            student_depth=int(cfg.get("student_depth", 0)),
            predicted_accuracy_loss=float(med[0]),
            accuracy_loss_interval=Interval(float(lo[0]), float(hi[0])),
            predicted_speedup=float(med[1]),
            speedup_interval=Interval(float(lo[1]), float(hi[1])),
            measured=MeasuredTrial(
                e.study, int(m["number"]), m["accuracy_loss"], m["speedup"], m["mlflow_run_id"]
            )
            if m
            else None,
            trials_used=self.trials_used,
        )


def build_recommender(storage: str | None = None, study: str | None = None) -> Recommender:
    trials = load_trials(storage, [study] if study else None)
    if not trials:
        where = storage or default_storage()
        raise ConfigError(
            f"no finished trials in {where}"
            + (f" for study {study!r}" if study else "")
            + "; run a search first, e.g. `autoprumux search --space search_spaces/prumux.yaml "
            "--task sst2 --trials 12`"
        )
    return Recommender(trials)


def recommend(
    budget: float = 2.0,
    task: str | None = None,
    *,
    model: str | None = None,
    device: str | None = None,
    storage: str | None = None,
    study: str | None = None,
) -> Recommendation:
    """The fastest configuration predicted to stay within `budget` accuracy-loss points.

    Trains the meta-model on every finished trial in `storage` (default: ./autoprumux.db) and
    picks among the search-space grid of the matching study (task/model/device filters narrow
    the studies considered when several exist)."""
    budget = check_budget(budget)
    return build_recommender(storage, study).recommend(budget, task, model=model, device=device)
