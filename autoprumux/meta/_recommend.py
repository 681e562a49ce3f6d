"""Recommend: the fastest configuration measured to stay within an accuracy budget.

The answer is a measurement, never a prediction: among the configurations one study measured on
one machine (repeats on that machine averaged), the fastest whose measured loss on the
validation split is within the budget (the dev loss without a split; see `autoprumux._selection`);
its dev loss is reported beside it as the figure to expect; the baseline (sparsity 0, N=1) qualifies at every budget with loss 0 and
speedup 1.00x by definition. Which study and machine answer is `_scope.select_entry`'s choice:
one (task, model, device), one machine, or a refusal that lists them. The meta-model, trained on
every finished trial of the studies in a storage (several tasks, models and devices can share
one model: the context is in the features), adds two things: its prediction for the answer
(shown beside the measurement), and a *suggestion*, the fastest configuration not measured yet
whose pessimistic (interval top) predicted loss is within the budget and whose predicted speedup
beats the answer by `SUGGEST_GAIN`, with the `autoprumux evaluate --study` command that measures
it with the study's own recipe and data as a new trial of that study. A model fitted on a
handful of trials cannot overrule a measurement, and a prediction is never handed out as if it
were one.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from autoprumux._selection import (
    SELECTION_STANDARD_ERRORS,
    VALIDATION,
    describe_losses,
    dev_chosen_line,
    recorded_losses,
    selection_loss,
)
from autoprumux.config import BASELINE, CANDIDATE_FIELDS, Candidate, check_budget, check_margin_se
from autoprumux.errors import ConfigError
from autoprumux.meta._model import MetaModel, training_table
from autoprumux.meta._scope import (
    StudyEntry,
    current_machine_key,
    entries_from_trials,
    entry_from_dict,
    machine_identity,
    select_entry,
)
from autoprumux.tracking import default_storage, missing_sqlite_file

# a suggestion must be predicted this much faster than the measured answer to be worth a trial
SUGGEST_GAIN = 1.1


@dataclass(frozen=True)
class Interval:
    low: float
    high: float


@dataclass(frozen=True)
class MeasuredTrial:
    """The latest trial of the answer's configuration; losses and speedup are the means over its
    `repeats` finished trials (`accuracy_loss` on dev, `validation_loss` on validation)."""

    study: str
    number: int
    accuracy_loss: float
    speedup: float
    repeats: int
    mlflow_run_id: str | None
    validation_loss: float | None = None
    validation_loss_se: float | None = None


@dataclass(frozen=True)
class Suggestion:
    """An unmeasured configuration the meta-model predicts to be faster than the answer and
    within the budget even at its interval's top: worth measuring, not yet an answer."""

    config: Candidate
    predicted_accuracy_loss: float
    accuracy_loss_interval: Interval
    predicted_speedup: float
    speedup_interval: Interval
    command: str  # the command that measures it

    def describe(self) -> str:
        lo, hi = self.accuracy_loss_interval, self.speedup_interval
        return (
            f"  worth measuring next: {config_line(self.config).strip()} - predicted loss "
            f"{self.predicted_accuracy_loss:.2f} pts [{lo.low:.2f}, {lo.high:.2f}], speedup "
            f"{self.predicted_speedup:.2f}x [{hi.low:.2f}, {hi.high:.2f}]; not measured, so "
            f"not the answer: `{self.command}` (or more search trials) "
            "measures it"
        )


def config_line(c: Candidate) -> str:
    if c.technique == "students":
        return f"  {c.students} students of depth {c.student_depth} (Academus), {c.precision}"
    late = (
        f", {c.mux_layers} per-instance layers, {c.mux_combiner} combiner"
        if c.mux_shape.late
        else ""
    )
    return f"  sparsity {c.sparsity:g}, N={c.mux}, mux variant {c.mux_variant}{late}, {c.precision}"


def mux_shape_flags(c: Candidate) -> str:
    """The command-line flags of a late multiplexed model ("" for early mixing, the default)."""
    if not c.mux_shape.late:
        return ""
    return f" --mux-layers {c.mux_layers} --mux-combiner {c.mux_combiner}"


def evaluate_command(c: Candidate, study: str, storage: str | None = None) -> str:
    """The command that measures `c` as a new trial of `study`, with the study's own recipe and
    data (`--storage` left out for the default storage)."""
    where = (
        ""
        if storage is None or storage == default_storage()
        else f" --storage {shlex.quote(storage)}"
    )
    head = f"autoprumux evaluate --study {shlex.quote(study)}{where}"
    tail = "" if c.precision == "fp32" else f" --precision {c.precision}"
    if c.technique == "students":
        return f"{head} --students {c.students} --student-depth {c.student_depth}{tail}"
    return (
        f"{head} --sparsity {c.sparsity:g} --mux {c.mux} --mux-variant {c.mux_variant}"
        f"{mux_shape_flags(c)}{tail}"
    )


@dataclass(frozen=True)
class Recommendation:
    """The answer for one budget. Its configuration's fields read as its own (`rec.sparsity`)
    and `to_dict` writes them in its place, flat, as before the answer held a `Candidate`."""

    budget: float
    task: str
    model: str
    device: str
    candidate: Candidate  # the answer's configuration (see `config`)
    source: str  # "measured" (a finished trial) or "baseline" (loss 0, 1.00x by definition)
    accuracy_loss: float  # the answer's measured loss on dev, what to expect (0: the baseline)
    speedup: float  # the answer's measured speedup (1.0 for the baseline)
    measured: MeasuredTrial | None
    predicted_accuracy_loss: float  # the meta-model's view of the answer, for comparison
    accuracy_loss_interval: Interval
    predicted_speedup: float
    speedup_interval: Interval
    suggestion: Suggestion | None
    trials_used: int
    study: str  # the study whose measurements answer
    machine: str  # where they were measured (Machine.describe()), never several machines
    machine_key: str  # Machine.key, or "unknown" for trials that recorded none
    # the loss on the validation split, which chose (None: the dev loss chose, see chosen_on)
    validation_loss: float | None = None
    chosen_on: str = VALIDATION  # "validation", else why dev chose (`autoprumux._selection`)
    # standard errors of its validation loss a configuration paid before the budget compared
    margin_se: float = SELECTION_STANDARD_ERRORS

    def __getattr__(self, name: str) -> Any:
        # only called for names the dataclass lacks: the configuration's fields
        if name in CANDIDATE_FIELDS:
            return getattr(self.__dict__["candidate"], name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def to_dict(self) -> dict:
        out: dict[str, Any] = {}
        for k, v in asdict(self).items():
            if k == "candidate":  # flat, where its fields stood
                out.update(v)
            else:
                out[k] = v
        return out

    def config(self) -> Candidate:
        return self.candidate

    def describe(self) -> str:
        lo, hi = self.accuracy_loss_interval, self.speedup_interval
        m = self.measured
        if m is not None:
            rep = f", mean of {m.repeats} trials" if m.repeats > 1 else ""
            what = (
                f"  measured (trial {m.number} of {m.study}{rep}): "
                f"{describe_losses(m.accuracy_loss, m.validation_loss, m.validation_loss_se)}, speedup {m.speedup:.2f}x"
            )
        else:
            what = (
                "  the baseline: accuracy loss 0, speedup 1.00x by definition (no measured "
                "configuration is within the budget)"
            )
        split = "validation" if self.chosen_on == VALIDATION else "dev"
        lines = [
            f"budget {self.budget:g} pts on {self.task} ({self.model}, {self.device}):",
            config_line(self.config()),
            what,
            f"  meta-model ({self.trials_used} trials) for it: loss on {split} "
            f"{self.predicted_accuracy_loss:.2f} pts [{lo.low:.2f}, {lo.high:.2f}], speedup "
            f"{self.predicted_speedup:.2f}x [{hi.low:.2f}, {hi.high:.2f}]",
            f"  measured on {self.machine} (machine {self.machine_key}, study {self.study})",
        ]
        if self.suggestion is not None:
            lines.append(self.suggestion.describe())
        dev_line = dev_chosen_line(self.chosen_on)
        if dev_line is not None:
            lines.append(f"  ({dev_line})")
        elif self.margin_se != SELECTION_STANDARD_ERRORS:
            lines.append(
                f"  (each validation loss raised by {self.margin_se:g} standard errors before it "
                "was compared with the budget)"
            )
        return "\n".join(lines)


def context_of(study_attrs: dict[str, Any], baseline_metric: float) -> dict[str, Any]:
    d = study_attrs.get("descriptors", {})
    return {**d, "baseline_metric": baseline_metric}


def load_trials(storage: str | None, study_names: list[str] | None = None) -> list[dict[str, Any]]:
    """Finished (COMPLETE) trials of every study in `storage` as flat records."""
    import optuna

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
            if t.state.name != "COMPLETE" or recorded_losses(t.user_attrs) is None:
                continue
            ua = t.user_attrs
            # a trial from before trials recorded their machine ran where its study did
            machine_key, machine = machine_identity(ua.get("machine", attrs.get("machine")))
            out.append(
                with_losses(
                    ua,
                    {
                        "study": summ.study_name,
                        "number": t.number,
                        "task": attrs["task"],
                        "model": attrs["model"],
                        "device": attrs["device"],
                        # the grid the study recorded (a study from before it did: none)
                        "candidates": [Candidate.from_dict(c) for c in attrs.get("candidates", [])],
                        "config": Candidate.from_dict(ua["config"]),
                        "context": context_of(
                            attrs,
                            float(ua.get("baseline_metric", ua.get("baseline_accuracy", 0.0))),
                        ),
                        "speedup": float(ua["speedup"]),
                        "mlflow_run_id": ua.get("mlflow_run_id"),
                        "machine_key": machine_key,
                        "machine": machine,
                    },
                )
            )
    return out


def with_losses(
    recorded: dict[str, Any],
    record: dict[str, Any],
    margin_se: float = SELECTION_STANDARD_ERRORS,
) -> dict[str, Any]:
    """`record` with the losses of `recorded` (a trial's user attributes, or a flat record):
    `accuracy_loss` on dev (what to expect), `validation_loss` (None: the dev loss chose),
    `chosen_on`, and `selection_loss`, the one that chooses (`autoprumux._selection`, raised by
    `margin_se` standard errors)."""
    got = recorded_losses(recorded)
    if got is None:
        raise ConfigError(f"a trial record without an accuracy_loss: {sorted(recorded)}")
    return {
        **record,
        "accuracy_loss": got.dev,
        "validation_loss": got.validation,
        "validation_loss_se": got.validation_se,
        "chosen_on": got.chosen_on,
        "selection_loss": selection_loss(got.dev, got.validation, got.validation_se, margin_se),
    }


def fit_meta_model(trials: list[dict[str, Any]], **kw: Any) -> MetaModel:
    """The meta-model of `load_trials`' records; its loss target is the loss that chooses."""
    X, y = training_table(
        [(t["config"], t["context"], t["selection_loss"], t["speedup"]) for t in trials]
    )
    return MetaModel(**kw).fit(X, y)


def choose(
    budget: float,
    meta: MetaModel,
    cands: list[Candidate],
    context: dict[str, Any],
    measured: dict[Candidate, dict[str, Any]],
    command: Callable[[Candidate], str],
) -> tuple[Candidate, dict[str, Any] | None, Suggestion | None]:
    """The answer for `budget`: (config, its measured means or None for the baseline, a
    suggestion, whose command is `command(config)`). The fastest measured configuration whose
    mean loss that chooses (`selection_loss`: validation, else dev) is within the budget, else
    the baseline; see the module docstring for the suggestion."""
    import numpy as np

    from autoprumux.meta._model import features

    answer = BASELINE
    answer_m: dict[str, Any] | None = None
    best_speed = 1.0
    for m in measured.values():
        if m["config"].is_baseline or m["selection_loss"] > budget:
            continue
        if m["speedup"] > best_speed:
            answer, answer_m, best_speed = m["config"], m, m["speedup"]
    misses = [m["config"] for m in measured.values() if m["selection_loss"] > budget]
    open_ = [
        c
        for c in cands
        if c not in measured
        and not c.is_baseline
        # at least as aggressive as a measured miss: expected outside the budget too
        and not any(x.below(c) for x in misses)
    ]
    suggestion = None
    if open_:
        X = np.array([features(c, context) for c in open_], dtype=float)
        med = meta.predict(X)
        lo, hi = meta.predict_interval(X)
        ok = [
            i
            for i in range(len(open_))
            if hi[i, 0] <= budget and med[i, 1] >= SUGGEST_GAIN * best_speed
        ]
        if ok:
            i = max(ok, key=lambda j: med[j, 1])
            suggestion = Suggestion(
                config=open_[i],
                predicted_accuracy_loss=float(med[i, 0]),
                accuracy_loss_interval=Interval(float(lo[i, 0]), float(hi[i, 0])),
                predicted_speedup=float(med[i, 1]),
                speedup_interval=Interval(float(lo[i, 1]), float(hi[i, 1])),
                command=command(open_[i]),
            )
    return answer, answer_m, suggestion


class Recommender:
    """A fitted meta-model plus, per study and machine, its context, candidate grid and measured
    trials (`_scope.StudyEntry`). Stored as data (`to_dict` / `from_dict`: JSON and LightGBM
    text models) for the served MLflow model; still picklable for in-process use."""

    def __init__(
        self,
        trials: list[dict[str, Any]],
        *,
        storage: str | None = None,
        margin_se: float = SELECTION_STANDARD_ERRORS,
        **meta_kw: Any,
    ):
        if not trials:
            raise ConfigError("no finished trials to build a recommender from; run a search first")
        # records made by hand too
        trials = [with_losses(t, t, margin_se) for t in trials]
        self.meta = fit_meta_model(trials, **meta_kw)
        self.trials_used = len(trials)
        self.margin_se = margin_se  # checked where it entered (`check_margin_se`)
        self.entries = entries_from_trials(trials, storage, margin_se)

    # ---- serialization as data (no pickle) --------------------------------------------------
    def to_dict(self, *, include_trees: bool = True) -> dict[str, Any]:
        """Everything `recommend` reads, as JSON-able data: the meta-model (`MetaModel.to_dict`;
        its LightGBM text models left out with `include_trees=False`, for storing them as
        separate files) and per study and machine its context, candidate grid and measured
        means."""
        meta = self.meta.to_dict()
        if not include_trees:
            meta.pop("trees")
        return {
            "format": RECOMMENDER_FORMAT,
            "trials_used": int(self.trials_used),
            "margin_se": float(self.margin_se),
            "meta": meta,
            "entries": [e.to_dict() for e in self.entries],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], trees: list[str] | None = None) -> Recommender:
        """The recommender `to_dict` described (with `trees`, the meta-model's LightGBM text
        models, when they were stored apart). Refuses (ValueError) any other shape."""
        if not isinstance(d, dict) or d.get("format") not in (RECOMMENDER_FORMAT, OLD_FORMAT):
            got = d.get("format") if isinstance(d, dict) else type(d).__name__
            raise ValueError(f"not a {RECOMMENDER_FORMAT} recommender (format {got!r})")
        meta_d = d.get("meta")
        if not isinstance(meta_d, dict):
            raise ValueError("the recommender has no meta-model")
        if trees is not None:
            meta_d = {**meta_d, "trees": trees}
        entries = d.get("entries")
        if not isinstance(entries, list) or not entries:
            raise ValueError("the recommender must hold at least one study entry")
        rec = cls.__new__(cls)
        rec.meta = MetaModel.from_dict(meta_d)
        rec.trials_used = int(d.get("trials_used", 0))
        # a recommender stored before the margin was a setting used the default
        rec.margin_se = check_margin_se(d.get("margin_se", SELECTION_STANDARD_ERRORS))
        rec.entries = [entry_from_dict(e) for e in entries]
        return rec

    def _entry(
        self,
        task: str | None,
        model: str | None,
        device: str | None,
        study: str | None = None,
        machine: str | None = None,
        here: bool = True,
        one_machine: bool = True,
    ) -> StudyEntry:
        """The one study and machine the filters leave (`_scope.select_entry`); with `here`, the
        machine this process runs on is taken when the trials come from several."""
        return select_entry(
            self.entries,
            task,
            model,
            device,
            study=study,
            machine=machine,
            prefer=current_machine_key if here else None,
            one_machine=one_machine,
        )

    def predict(
        self,
        configs: list[Candidate],
        task: str | None = None,
        *,
        model: str | None = None,
        device: str | None = None,
        study: str | None = None,
    ) -> tuple[Any, Any, Any]:
        """The meta-model's (median, low, high) predictions, each (n, 2) = [accuracy loss,
        speedup], for any configurations in the context of the matching study (one (task,
        model, device); the machine does not change a prediction)."""
        e = self._entry(task, model, device, study, here=False, one_machine=False)
        return self._predict_in(e, configs)

    def _predict_in(self, e: StudyEntry, configs: list[Candidate]) -> tuple[Any, Any, Any]:
        import numpy as np

        from autoprumux.meta._model import features

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
        study: str | None = None,
        machine: str | None = None,
        here: bool = True,
    ) -> Recommendation:
        """The answer for `budget` from the one study and machine the filters leave (a
        ConfigError lists the choices when they leave several; see `_scope`). `here=False`
        never takes this process's machine for the caller's (the served model's clients run
        elsewhere)."""
        budget = check_budget(budget)
        e = self._entry(task, model, device, study, machine, here)
        cfg, m, suggestion = choose(
            budget,
            self.meta,
            e.candidates,
            e.context,
            e.measured,
            lambda c: evaluate_command(c, e.study, e.storage),
        )
        med, lo, hi = self._predict_in(e, [cfg])
        return Recommendation(
            budget=budget,
            task=e.task,
            model=e.model,
            device=e.device,
            candidate=cfg,
            source="measured" if m else "baseline",
            accuracy_loss=float(m["accuracy_loss"]) if m else 0.0,
            speedup=float(m["speedup"]) if m else 1.0,
            measured=MeasuredTrial(
                e.study,
                int(m["number"]),
                float(m["accuracy_loss"]),
                float(m["speedup"]),
                int(m["repeats"]),
                m["mlflow_run_id"],
                _or_none(m.get("validation_loss")),
                _or_none(m.get("validation_loss_se")),
            )
            if m
            else None,
            predicted_accuracy_loss=float(med[0, 0]),
            accuracy_loss_interval=Interval(float(lo[0, 0]), float(hi[0, 0])),
            predicted_speedup=float(med[0, 1]),
            speedup_interval=Interval(float(lo[0, 1]), float(hi[0, 1])),
            suggestion=suggestion,
            trials_used=self.trials_used,
            study=e.study,
            machine=e.machine,
            machine_key=e.machine_key,
            # the baseline loses 0 on every split by definition
            validation_loss=(_or_none(m.get("validation_loss")) if m else 0.0)
            if e.chosen_on == VALIDATION
            else None,
            chosen_on=e.chosen_on,
            margin_se=self.margin_se,
        )


def _or_none(x: Any) -> float | None:
    return None if x is None else float(x)


# 4: one entry per study and machine, with the machine and the study's storage; 5: both losses
# (validation, which chooses, and dev) and the split that chose (a /4 one chose on dev)
RECOMMENDER_FORMAT = "autoprumux.recommender/5"
OLD_FORMAT = "autoprumux.recommender/4"


def build_recommender(
    storage: str | None = None,
    study: str | None = None,
    margin_se: float = SELECTION_STANDARD_ERRORS,
) -> Recommender:
    margin_se = check_margin_se(margin_se)  # before the store is read: bad input does no work
    url = storage or default_storage()
    trials = load_trials(url, [study] if study else None)
    if not trials:
        raise ConfigError(
            f"no finished trials in {url}"
            + (f" for study {study!r}" if study else "")
            + "; run a search first, e.g. `autoprumux search --space search_spaces/prumux.yaml "
            "--task sst2 --trials 12`"
        )
    return Recommender(trials, storage=url, margin_se=margin_se)


def recommend(
    budget: float = 2.0,
    task: str | None = None,
    *,
    model: str | None = None,
    device: str | None = None,
    storage: str | None = None,
    study: str | None = None,
    machine: str | None = None,
    margin_se: float = SELECTION_STANDARD_ERRORS,
) -> Recommendation:
    """The fastest configuration measured to stay within `budget` accuracy-loss points (the
    baseline when none is), with the meta-model's view of it and a suggestion of what to measure
    next. Each configuration's validation loss is raised by `margin_se` of its standard errors
    before it is compared with the budget (1: about 84% one-sided confidence; 2 is stricter).

    Trains the meta-model on every finished trial in `storage` (default: ./autoprumux.db) (only
    `study`'s when given). The answer comes from one (task, model, device) and one machine: when
    the filters (`task`, `model` (a substring of the model id), `device`, `study`, `machine` (a
    machine key)) leave several (task, model, device), or trials from several machines none of
    which is this one, a ConfigError lists them."""
    budget = check_budget(budget)
    return build_recommender(storage, study, margin_se).recommend(
        budget, task, model=model, device=device, study=study, machine=machine
    )
