"""Which measurements one recommendation comes from: one (task, model, device), one machine.

An accuracy loss holds for one task and base model, and a speedup for one device and one
machine: the same configuration ran 2.8x on one CPU and 1.4x on another, so an answer mixing
them, or the mean of the two, describes no machine. The recommender therefore keeps one
`StudyEntry` per (study, machine) (`entries_from_trials`, whose means group repeats by
configuration *and* machine) and `select_entry` answers from exactly one of them:

- the filters (task, model, device, study, machine) must leave one (task, model, device);
  several are refused (`AmbiguousScope`), listing them, never resolved by a silent choice;
- the entries left must come from one machine; among several, the caller's own machine when it
  is one of them (`prefer`), else a refusal listing the machines;
- among several studies of that (task, model, device) on that machine, the one that measured the
  most configurations (each study's figures are relative to its own baseline and recipe, so
  studies are not merged).

A trial that records no machine (studies from before they did) takes its study's, else it is
on the unknown machine `UNKNOWN_MACHINE`.

Each entry chooses on one split (`chosen_on`, see `autoprumux._selection`): the validation loss
when every one of its trials measured one, else the dev loss for all of them (a study without a
validation split, or measured before trials recorded one), never a mix of the two. An entry's
`selection_loss` is pooled along sparsity across its configurations (`pooled_measured`, see
`autoprumux._selection`), so a served recommender reads what the study's own answer read.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from autoprumux._selection import (
    CHOICES,
    DEV,
    DEV_UNRECORDED,
    VALIDATION,
    PathPoint,
    RecordedLosses,
    pooled_selection_losses,
)
from autoprumux.config import BASELINE, Candidate
from autoprumux.errors import ConfigError

UNKNOWN_MACHINE = "unknown"
UNKNOWN_MACHINE_TEXT = "an unknown machine (recorded before studies recorded their machine)"


def machine_identity(recorded: Any) -> tuple[str, str]:
    """(key, one-line description) of a `Machine.to_dict()` a study or trial recorded; the
    unknown machine for a missing or unreadable record."""
    if not isinstance(recorded, dict):
        return UNKNOWN_MACHINE, UNKNOWN_MACHINE_TEXT
    from autoprumux.evaluation._machine import Machine

    try:
        m = Machine.from_dict(recorded)
    except (KeyError, TypeError, ValueError):
        return UNKNOWN_MACHINE, UNKNOWN_MACHINE_TEXT
    return m.key, m.describe()


def current_machine_key(device: str) -> str:
    """The key of the machine this process runs on, for measurements on `device`."""
    from autoprumux.evaluation._machine import this_machine

    return this_machine(device).key


@dataclass
class StudyEntry:
    """The finished trials of one study measured on one machine: its context, candidate grid and
    measured means."""

    study: str
    task: str
    model: str
    device: str
    context: dict[str, Any]
    candidates: list[Candidate]
    measured: dict[Candidate, dict[str, Any]]
    machine_key: str
    machine: str  # Machine.describe(), or the unknown machine's text
    storage: str | None  # the Optuna storage URL the study lives in (None: not known)
    chosen_on: str = VALIDATION  # the split whose loss chooses (`selection_loss` of `measured`)

    @property
    def scope(self) -> tuple[str, str, str]:
        return (self.task, self.model, self.device)

    def to_dict(self) -> dict[str, Any]:
        return {
            "study": self.study,
            "task": self.task,
            "model": self.model,
            "device": self.device,
            "machine_key": self.machine_key,
            "machine": self.machine,
            "storage": self.storage,
            "chosen_on": self.chosen_on,
            "context": dict(self.context),
            "candidates": [c.to_dict() for c in self.candidates],
            "measured": [{**m, "config": m["config"].to_dict()} for m in self.measured.values()],
        }


def measured_means(rows: list[dict[str, Any]]) -> dict[tuple[Candidate, str], dict[str, Any]]:
    """Per (configuration, machine key): the latest trial, with losses (dev, validation, the one
    that chooses) and speedup averaged over its repeats on that machine only."""
    groups: dict[tuple[Candidate, str], list[dict[str, Any]]] = {}
    for t in sorted(rows, key=lambda r: r["number"]):
        groups.setdefault((t["config"], t["machine_key"]), []).append(t)

    def mean(g: list[dict[str, Any]], k: str) -> float:
        return sum(x[k] for x in g) / len(g)

    def mean_or_none(g: list[dict[str, Any]], k: str) -> float | None:
        return None if any(x.get(k) is None for x in g) else mean(g, k)

    return {
        k: {
            "config": k[0],
            "number": g[-1]["number"],
            "mlflow_run_id": g[-1].get("mlflow_run_id"),
            "accuracy_loss": mean(g, "accuracy_loss"),
            # None when a repeat recorded none
            "validation_loss": mean_or_none(g, "validation_loss"),
            "validation_loss_se": mean_or_none(g, "validation_loss_se"),
            "selection_loss": mean(g, "selection_loss"),
            "speedup": mean(g, "speedup"),
            "repeats": len(g),
        }
        for k, g in groups.items()
    }


def pooled_measured(
    measured: dict[Candidate, dict[str, Any]], split: str, margin_se: float
) -> dict[Candidate, dict[str, Any]]:
    """`measured` (one machine's means) with each `selection_loss` read from the validation
    losses pooled along sparsity within each kind of configuration (`autoprumux._selection`);
    the dev loss where `split` is not validation."""
    items = list(measured.items())
    points = [
        PathPoint(
            cfg.sparsity_kind,
            cfg.sparsity,
            RecordedLosses(
                m["accuracy_loss"],
                m["validation_loss"] if split == VALIDATION else None,
                split if split == VALIDATION else DEV,
                m["validation_loss_se"],
            ),
        )
        for cfg, m in items
    ]
    return {
        cfg: {**m, "selection_loss": loss}
        for (cfg, m), loss in zip(items, pooled_selection_losses(points, margin_se), strict=True)
    }


def one_split(rows: list[dict[str, Any]]) -> str:
    """The split an entry of these trial records chooses on: validation when all of them
    measured its loss, else why the dev loss chooses for all (`_selection`)."""
    split = {r.get("chosen_on", VALIDATION) for r in rows} - {VALIDATION}
    return DEV_UNRECORDED if DEV_UNRECORDED in split else split.pop() if split else VALIDATION


def entries_from_trials(
    trials: list[dict[str, Any]], storage: str | None, margin_se: float
) -> list[StudyEntry]:
    """One entry per (study, machine) of `load_trials`' records (a record without a machine is
    on the unknown machine); each choosing loss pooled along sparsity plus `margin_se` standard
    errors."""
    by_study: dict[str, list[dict[str, Any]]] = {}
    for t in trials:
        key, text = t.get("machine_key", UNKNOWN_MACHINE), t.get("machine", UNKNOWN_MACHINE_TEXT)
        by_study.setdefault(t["study"], []).append({**t, "machine_key": key, "machine": text})
    entries = []
    for name, rows in by_study.items():
        split = one_split(rows)
        if split != VALIDATION:  # never a mix: the dev loss chooses for every trial
            rows = [{**r, "selection_loss": r["accuracy_loss"]} for r in rows]
        means = measured_means(rows)
        for key in dict.fromkeys(r["machine_key"] for r in rows):
            first = next(r for r in rows if r["machine_key"] == key)
            entries.append(
                StudyEntry(
                    study=name,
                    task=first["task"],
                    model=first["model"],
                    device=first["device"],
                    context=first["context"],
                    candidates=first["candidates"],
                    measured=pooled_measured(
                        {c: m for (c, k), m in means.items() if k == key}, split, margin_se
                    ),
                    machine_key=key,
                    machine=first["machine"],
                    storage=storage,
                    chosen_on=split,
                )
            )
    return entries


class AmbiguousScope(ConfigError):
    """The filters leave several (task, model, device), or several machines: no single answer.
    The message names the command-line flags; `columns_message` the served model's columns."""

    def __init__(self, kind: str, options: list[str], context: str):
        self.kind = kind  # "scope" or "machine"
        self.options = options
        self.context = context
        super().__init__(self._message(columns=False))

    def columns_message(self) -> str:
        return self._message(columns=True)

    def _message(self, *, columns: bool) -> str:
        listed = "; ".join(self.options)
        if self.kind == "scope":
            how = (
                'add "task", "model" and/or "device" (or "study") to the request'
                if columns
                else "pick one with --task, --model, --device or --study"
            )
            return (
                f"{self.context} hold trials of {len(self.options)} (task, model, device): "
                f"{listed}. A recommendation holds for one of them: {how}"
            )
        how = 'add a "machine" column with its key' if columns else "pick one with --machine KEY"
        return (
            f"{self.context} measured on {len(self.options)} machines: {listed}. Speedups "
            f"differ between machines and are never mixed: {how}"
        )


def _filters(task: Any, model: Any, device: Any, study: Any, machine: Any) -> str:
    given = {"task": task, "model": model, "device": device, "study": study, "machine": machine}
    parts = [f"{k}={v!r}" for k, v in given.items() if v is not None]
    return ", ".join(parts) if parts else "no filter"


def select_entry(
    entries: list[StudyEntry],
    task: str | None = None,
    model: str | None = None,
    device: str | None = None,
    *,
    study: str | None = None,
    machine: str | None = None,
    prefer: Callable[[str], str | None] | None = None,
    one_machine: bool = True,
) -> StudyEntry:
    """The one entry a recommendation for these filters comes from (see the module docstring).
    `model` matches a substring of the model id (an exact id wins); `prefer(device)` gives the
    key of the machine to take when the trials come from several. `one_machine=False` skips the
    machine rule, for what does not depend on the machine (the meta-model's predictions in a
    study's context)."""
    match = [
        e
        for e in entries
        if (task is None or e.task == task)
        and (model is None or model in e.model)
        and (device is None or e.device == device)
        and (study is None or e.study == study)
        and (machine is None or e.machine_key == machine)
    ]
    if model is not None and any(e.model == model for e in match):
        match = [e for e in match if e.model == model]
    if not match:
        seen = sorted({f"({e.task}, {e.model}, {e.device}) on {e.machine_key}" for e in entries})
        raise ConfigError(
            f"no finished trials for {_filters(task, model, device, study, machine)}; the "
            f"studies cover {', '.join(seen)}. Run a search for it first, or change the filter."
        )
    where = "the studies" if study is None else f"study {study!r}"
    scopes: dict[tuple[str, str, str], list[str]] = {}
    for e in match:
        scopes.setdefault(e.scope, []).append(e.study)
    if len(scopes) > 1:
        options = [
            f"({t}, {m}, {d}) in {', '.join(sorted(set(names)))}"
            for (t, m, d), names in sorted(scopes.items())
        ]
        raise AmbiguousScope(
            "scope", options, f"{where} matching {_filters(task, model, device, study, machine)}"
        )
    machines = {e.machine_key: e.machine for e in match}
    if one_machine and len(machines) > 1:
        here = prefer(match[0].device) if prefer is not None else None
        if here in machines:
            match = [e for e in match if e.machine_key == here]
        else:
            t, m, d = match[0].scope
            note = "" if prefer is None else ", none of them this one"
            raise AmbiguousScope(
                "machine",
                [f"{k}: {text}" for k, text in sorted(machines.items())],
                f"the trials of {t} ({m}, {d}) were{note}",
            )
    return max(match, key=lambda e: len(e.measured))


_MEASURED_KEYS = ("config", "accuracy_loss", "speedup", "number", "repeats")


def entry_from_dict(e: Any) -> StudyEntry:
    """One study entry of `Recommender.to_dict`, its types checked (ValueError): what `choose`
    and `recommend` read must be there and be of the right kind. An entry from before entries
    recorded `chosen_on` (format /4) chose on dev: its losses are dev losses."""
    if not isinstance(e, dict):
        raise ValueError(f"a study entry must be an object, got {type(e).__name__}")
    for k in ("study", "task", "model", "device", "machine_key", "machine"):
        if not isinstance(e.get(k), str):
            raise ValueError(f"study entry field {k!r} must be a string")
    storage = e.get("storage")
    if storage is not None and not isinstance(storage, str):
        raise ValueError(f"study {e['study']!r}: storage must be a string or null")
    split = e.get("chosen_on", DEV_UNRECORDED)
    if split not in CHOICES:
        raise ValueError(f"study {e['study']!r}: chosen_on must be one of {list(CHOICES)}")
    ctx, cands, measured = e.get("context"), e.get("candidates"), e.get("measured")
    if not isinstance(ctx, dict):
        raise ValueError(f"study {e['study']!r}: context must be an object")
    if not isinstance(cands, list) or not all(isinstance(c, dict) for c in cands):
        raise ValueError(f"study {e['study']!r}: candidates must be a list of objects")
    if not isinstance(measured, list):
        raise ValueError(f"study {e['study']!r}: measured must be a list of objects")
    out: dict[Candidate, dict[str, Any]] = {}
    for m in measured:
        if not isinstance(m, dict) or not all(k in m for k in _MEASURED_KEYS):
            raise ValueError(
                f"study {e['study']!r}: each measured configuration needs {list(_MEASURED_KEYS)}"
            )
        if split == VALIDATION and "selection_loss" not in m:
            raise ValueError(
                f"study {e['study']!r}: a measured configuration has no selection_loss"
            )
        # a /4 entry's: the dev loss chose, no validation loss
        m = {
            "selection_loss": m["accuracy_loss"],
            "validation_loss": None,
            "validation_loss_se": None,
            **m,
        }
        losses = ("accuracy_loss", "selection_loss", "speedup")
        optional = [m[k] for k in ("validation_loss", "validation_loss_se") if m[k] is not None]
        if not isinstance(m["config"], dict) or not all(
            isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)
            for x in [*(m[k] for k in losses), *optional]
        ):
            raise ValueError(
                f"study {e['study']!r}: a measured configuration has a bad config or "
                "non-numeric loss/speedup"
            )
        try:
            cfg = Candidate.from_dict(m["config"])
        except ConfigError as err:
            raise ValueError(f"study {e['study']!r}: a measured configuration: {err}") from None
        out[cfg] = {"mlflow_run_id": None, **m, "config": cfg}
    from autoprumux.meta._model import features

    try:  # every configuration the entry can be asked about must give a feature row
        candidates = [Candidate.from_dict(c) for c in cands]
        for c in [BASELINE, *candidates, *out]:
            features(c, ctx)
    except (KeyError, TypeError, ValueError, ConfigError) as err:
        raise ValueError(
            f"study {e['study']!r}: a configuration or the context cannot be featurised: "
            f"{type(err).__name__}: {str(err)[:80]}"
        ) from None
    return StudyEntry(
        study=e["study"],
        task=e["task"],
        model=e["model"],
        device=e["device"],
        context=dict(ctx),
        candidates=candidates,
        measured=out,
        machine_key=e["machine_key"],
        machine=e["machine"],
        storage=storage,
        chosen_on=split,
    )
