"""Which configuration to export, read from a study: one finished trial's, or the recommended
configuration within an accuracy budget. Bad input (an unknown study, a trial that did not
finish, a budget no measured configuration meets) is a ConfigError before any model is built.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from autoprumux import tracking
from autoprumux._selection import SELECTION_STANDARD_ERRORS
from autoprumux.config import Candidate, check_budget
from autoprumux.deploy import ExportSource
from autoprumux.errors import ConfigError
from autoprumux.search import SearchSpace

# what a trial records of its measurement, copied to the model card beside the export's own
# (accuracy_loss on dev; validation_loss on the validation split, what the study chose on)
RECORDED = ("accuracy_loss", "validation_loss", "speedup", "metric", "baseline_metric")


@dataclass(frozen=True)
class StudyChoice:
    """A configuration chosen from a study, with the space (task, model, recipe) it ran in."""

    space: SearchSpace
    config: Candidate
    source: ExportSource


def _space(storage: str | None, study: str) -> SearchSpace:
    attrs = tracking.load_study_attrs(storage, tracking.check_study_name(study))
    return SearchSpace.from_dict(attrs["space"], source=f"study {study}")


def from_trial(storage: str | None, study: str, number: int) -> StudyChoice:
    """The configuration of finished trial `number` of `study`."""
    import optuna

    space = _space(storage, study)
    st = optuna.load_study(study_name=study, storage=storage or tracking.default_storage())
    trials = {t.number: t for t in st.get_trials(deepcopy=False)}
    done = sorted(n for n, t in trials.items() if _finished(t))
    hint = f"finished trials: {_some(done)}" if done else "it has no finished trial yet"
    t = trials.get(number)
    if t is None:
        raise ConfigError(f"study {study!r} has no trial {number}; {hint}")
    if not _finished(t):
        raise ConfigError(
            f"trial {number} of study {study!r} is {t.state.name}, not finished; export a "
            f"finished one ({hint})"
        )
    recorded = {k: float(t.user_attrs[k]) for k in RECORDED if k in t.user_attrs}
    return StudyChoice(
        space,
        Candidate.from_dict(t.user_attrs["config"]),
        ExportSource("trial", study, number, None, recorded),
    )


def from_budget(
    storage: str | None,
    study: str,
    budget: float,
    margin_se: float = SELECTION_STANDARD_ERRORS,
) -> StudyChoice:
    """The configuration `autoprumux recommend --study-name STUDY --budget B --margin-se K`
    answers: the fastest measured within the budget. The uncompressed baseline is refused (nothing to gain
    from an export of it through a study; `--sparsity 0 --mux 1` exports it explicitly)."""
    from autoprumux.meta import build_recommender

    b = check_budget(budget)
    space = _space(storage, study)  # first: an unknown study is named as such
    rec = build_recommender(storage, study, margin_se).recommend(b, space.task)
    m = rec.measured
    if m is None:
        raise ConfigError(
            f"no configuration measured in study {study!r} is within {b:g} accuracy-loss "
            "points; raise --budget, or export the uncompressed baseline with --sparsity 0 "
            "--mux 1"
        )
    recorded = {"accuracy_loss": m.accuracy_loss, "speedup": m.speedup}
    if m.validation_loss is not None:
        recorded["validation_loss"] = m.validation_loss
    return StudyChoice(space, rec.config(), ExportSource("budget", study, m.number, b, recorded))


def _finished(t: Any) -> bool:
    return t.state.name == "COMPLETE" and "config" in t.user_attrs


def _some(numbers: list[int], k: int = 10) -> str:
    head = ", ".join(map(str, numbers[:k]))
    return head + (f" and {len(numbers) - k} more" if len(numbers) > k else "")
