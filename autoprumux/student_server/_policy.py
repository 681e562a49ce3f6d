"""Which model serves: a pure policy over a table of operating points.

An operating point is one way to serve the task with its predicted examples/second (at the
server's max batch) and accuracy loss (points below the baseline): the first k
students of an ensemble (its key is the int k), or a whole configuration such as a multiplexed
model (its key is the configuration's name, e.g. "s=0.5 N=2 k=3 concat int8"). Measured losses
come in two (`autoprumux._selection`): the validation loss chooses (the table's order, the
budget), the dev loss reports; without a validation split the dev loss chooses and says so, and
a meta-model's predicted loss is chosen on as it is (`chosen_on` names which). The adaptive
policy watches the queue and estimates the queueing delay a request arriving now would see at
the current point, `queue / (rate - arrival rate)`. When that exceeds the latency objective it
steps down at once to the most accurate point that drains the queue within the objective (the
fastest point when none does): fewer students, or a model that multiplexes more inputs per
pass. It steps back up one point at a time, and only after the load has been low for `hold_s`
seconds without a break: at the more accurate point the arrivals would use at most
`restore_utilization` (70%) of its rate, its queueing delay and the oldest request's wait would
stay within `restore_fraction` of the objective (all of it by default). The margin between
stepping down (the queue exceeds what the current point drains in time) and stepping up (spare
capacity at the higher point), and a hold period per step up, keep the policy from flapping.

The policy holds no clock and does no I/O: every decision takes an `Observation` and the time
`now` from its caller, which makes it testable with synthetic values.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Protocol

from autoprumux._selection import DEV, DEV_CHOSEN, VALIDATION, chosen_on
from autoprumux.errors import ConfigError

MAX_CHANGES_KEPT = 1000  # recent changes kept for reports; `change_count` counts them all

PointKey = int | str
"""A point's key: k (the first k students of the ensemble) or a configuration's name."""

PREDICTED = "meta-model"
"""`chosen_on` of a meta-model's predicted loss: no split measured it, the prediction chooses."""
CHOSEN_ON = (VALIDATION, DEV, PREDICTED)


def chosen_line(on: str | None) -> str | None:
    """The line an output prints about which loss chose the points (None: no losses)."""
    if on is None:
        return None
    if on == VALIDATION:
        return "chosen on the validation loss (val loss); the dev loss (dev loss) reports"
    if on == DEV:
        return DEV_CHOSEN
    return "chosen on the meta-model's predicted losses (pessimistic); none measured here"


@dataclass(frozen=True)
class PointLosses:
    """A point's accuracy losses (points below the baseline): `accuracy_loss` on dev (reports)
    and `validation_loss` on the validation split (chooses; None without a split, then dev
    chooses), or with `chosen_on` "meta-model" the meta-model's prediction (chooses)."""

    accuracy_loss: float
    validation_loss: float | None = None
    chosen_on: str | None = None

    @classmethod
    def predicted(cls, loss: float) -> PointLosses:
        """A meta-model's predicted loss: chosen on as it is (no split measured it)."""
        return cls(float(loss), None, PREDICTED)


@dataclass(frozen=True)
class OperatingPoint:
    """One way to serve, its predicted examples/second and accuracy losses (points): the first
    `k` students of the ensemble, or the whole configuration named `config` (exactly one).

    accuracy_loss: on dev (reported), or the meta-model's prediction (`chosen_on` "meta-model").
    validation_loss: on the validation split, what chooses (None: no split, dev chooses).
    chosen_on: "validation", "dev" or "meta-model" (left None: validation when its loss is
    given, else dev; None without losses)."""

    k: int | None
    examples_per_second: float
    accuracy_loss: float | None = None
    config: str | None = None
    validation_loss: float | None = None
    chosen_on: str | None = None

    def __post_init__(self) -> None:
        if self.config is None:
            if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1:
                raise ConfigError(f"operating point k ({self.k!r}) must be a positive integer")
        elif self.k is not None:
            raise ConfigError(
                f"operating point {self.config!r} is a configuration; give k=None, not {self.k!r}"
            )
        elif not isinstance(self.config, str) or not self.config.strip():
            raise ConfigError(
                f"operating point configuration ({self.config!r}) must be a non-empty name, "
                'e.g. "s=0.5 N=2 k=3 concat"'
            )
        _number(
            f"operating point {self.name}: examples/second",
            self.examples_per_second,
            lambda v: v > 0,
            "a positive number",
        )
        for what, loss in (("accuracy", self.accuracy_loss), ("validation", self.validation_loss)):
            if loss is not None:
                _number(
                    f"operating point {self.name}: {what} loss",
                    loss,
                    lambda v: True,
                    "a finite number of points or None",
                )
        self._check_chosen_on()

    def _check_chosen_on(self) -> None:
        if self.accuracy_loss is None:
            if self.validation_loss is not None or self.chosen_on is not None:
                raise ConfigError(
                    f"operating point {self.name}: a validation loss or chosen_on needs the dev "
                    "loss (accuracy_loss) beside it"
                )
            return
        if self.chosen_on is None:
            object.__setattr__(self, "chosen_on", chosen_on(self.validation_loss))
        if self.chosen_on not in CHOSEN_ON:
            raise ConfigError(
                f"operating point {self.name}: chosen_on ({self.chosen_on!r}) must be one of "
                f"{list(CHOSEN_ON)}"
            )
        if (self.chosen_on == VALIDATION) != (self.validation_loss is not None):
            raise ConfigError(
                f"operating point {self.name}: chosen on {self.chosen_on} with validation loss "
                f"{self.validation_loss!r}; a validation loss is chosen on exactly when given"
            )

    @property
    def selection_loss(self) -> float | None:
        """The loss that chooses: the validation loss, else the dev (or predicted) loss."""
        return self.validation_loss if self.chosen_on == VALIDATION else self.accuracy_loss

    @property
    def key(self) -> PointKey:
        """k for a student point, the configuration's name otherwise (the table's key)."""
        return self.config if self.config is not None else int(self.k or 0)

    @property
    def name(self) -> str:
        """What served a request, as the server reports it: "k=2" or the configuration."""
        return point_name(self.key)

    def to_dict(self) -> dict[str, float | int | str | None]:
        return {
            "name": self.name,
            "k": self.k,
            "config": self.config,
            "examples_per_second": self.examples_per_second,
            "accuracy_loss": self.accuracy_loss,
            "validation_loss": self.validation_loss,
            "chosen_on": self.chosen_on,
        }


def point_name(key: PointKey) -> str:
    """A point's name as the server reports it: "k=2" for two students, else the key itself."""
    return key if isinstance(key, str) else f"k={key}"


PointTable = Mapping[PointKey, "OperatingPoint | tuple[float | None, float]"]
"""{key: OperatingPoint} or {key: (dev accuracy loss in points or None, examples/second)}; an
int key is a student count k, a str key a configuration's name."""


def table_chosen_on(points: PointTable) -> str | None:
    """What the table's losses are chosen on ("validation", "dev", "meta-model"; None without
    losses); points chosen on different losses are refused."""
    return _chosen_on(_as_points(points))


def _chosen_on(points: list[OperatingPoint]) -> str | None:
    ons = {p.chosen_on for p in points if p.chosen_on is not None}
    if len(ons) > 1:
        raise ConfigError(
            f"the operating points' losses are chosen on {sorted(ons)}; measure or predict every "
            "point's loss the same way"
        )
    return ons.pop() if ons else None


def operating_points(table: PointTable) -> tuple[OperatingPoint, ...]:
    """The table as operating points, most accurate first, dominated points removed.

    Order: lower loss first, on the loss that chooses (`OperatingPoint.selection_loss`: the
    validation loss, else dev or the prediction); without losses (all None, students only) more
    students first (every prefix of the boosted sum is a model, and more students fit the
    teacher better). A point that another beats on both accuracy and throughput is never worth
    choosing and is dropped, so along the result accuracy falls and throughput rises."""
    points = _as_points(table)
    _chosen_on(points)
    known = [p.selection_loss is not None for p in points]
    if not all(known):
        if any(known):
            missing = [p.name for p in points if p.accuracy_loss is None]
            raise ConfigError(
                f"accuracy loss missing for {', '.join(missing)}; give it for every point or "
                "for none"
            )
        configs = [p.name for p in points if p.config is not None]
        if configs:
            raise ConfigError(
                f"{', '.join(configs)}: a configuration is placed among the students by its "
                "accuracy loss; give every point's loss (measured on the dev set or predicted)"
            )

    if all(known):
        ordered = sorted(points, key=lambda p: (p.selection_loss, -p.examples_per_second))
    else:
        ordered = sorted(points, key=lambda p: -(p.k or 0))
    kept: list[OperatingPoint] = []
    for p in ordered:  # a later point is no more accurate: keep it only if it is faster
        if not kept or p.examples_per_second > kept[-1].examples_per_second:
            kept.append(p)
    return tuple(kept)


def _as_points(table: PointTable) -> list[OperatingPoint]:
    """The table's entries as checked operating points, in the table's order."""
    if not table:
        raise ConfigError("the operating-point table is empty; give at least one point")
    points = []
    for key, v in table.items():
        if isinstance(v, OperatingPoint):
            if v.key != key:
                raise ConfigError(f"operating point under key {key!r} is {v.name}; make them agree")
            points.append(v)
            continue
        try:
            loss, eps = v
        except (TypeError, ValueError):
            raise ConfigError(
                f"operating point {key!r}: {v!r} is not (accuracy loss, examples/second)"
            ) from None
        if isinstance(key, str):
            points.append(OperatingPoint(None, eps, loss, config=key))
        else:
            points.append(OperatingPoint(k=key, examples_per_second=eps, accuracy_loss=loss))
    return points


def within_budget(points: PointTable, budget: float) -> dict[PointKey, OperatingPoint]:
    """The points whose loss that chooses (`OperatingPoint.selection_loss`: the validation
    loss, else dev or the prediction) is at most `budget` points; every loss must be known. A
    point within the budget on dev but not on validation is left out."""
    _number("accuracy budget", budget, lambda v: v >= 0, "a number of points >= 0")
    listed = _as_points(points)
    on = _chosen_on(listed)
    table = {p.key: p for p in listed}
    unknown = [p.name for p in table.values() if p.selection_loss is None]
    if unknown:
        raise ConfigError(
            f"an accuracy budget needs every point's accuracy loss; {', '.join(unknown)} has none"
        )
    kept = {key: p for key, p in table.items() if (p.selection_loss or 0.0) <= budget}
    if not kept:
        best = min(table.values(), key=lambda p: p.selection_loss or 0.0)
        raise ConfigError(
            f"no operating point is within the budget of {budget:g} points (the most accurate, "
            f"{best.name}, loses {best.selection_loss:.2f} on {on}); raise the budget"
        )
    return kept


@dataclass(frozen=True)
class Observation:
    """What the server sees when it takes the next batch.

    queue_length: examples waiting, including the batch about to run.
    oldest_wait_s: how long the oldest waiting example has waited.
    arrival_rate: examples/second that arrived recently (None: unknown, taken as 0).
    service_rate: examples/second measured on the last full batch at the current k (None: no
        full batch since the last observation). It corrects the predicted rates for the machine's
        current speed."""

    queue_length: int
    oldest_wait_s: float = 0.0
    arrival_rate: float | None = None
    service_rate: float | None = None


@dataclass(frozen=True)
class PointChange:
    """One change of the serving point at time `t` (the caller's clock), by key."""

    t: float
    from_key: PointKey
    to_key: PointKey
    reason: str

    def to_dict(self) -> dict[str, float | int | str]:
        return {"t": self.t, "from": self.from_key, "to": self.to_key, "reason": self.reason}


class ServingPolicy(Protocol):
    """What the batcher needs from a policy: the current point's key, every key it may choose,
    a decision per observation, the recent changes (oldest first, at most `MAX_CHANGES_KEPT`),
    their total count and a JSON-able description."""

    mode: str
    changes: deque[PointChange]
    change_count: int

    @property
    def current(self) -> PointKey: ...

    @property
    def keys(self) -> tuple[PointKey, ...]: ...

    def observe(self, obs: Observation, now: float) -> PointKey: ...

    def describe(self) -> dict: ...


class FixedPolicy:
    """Always the same point: `key` students, or the configuration named `key` (the baseline
    of the burst comparison)."""

    mode = "fixed"

    def __init__(self, key: PointKey, *, points: PointTable | None = None):
        if isinstance(key, str):
            if not key.strip():
                raise ConfigError("the fixed configuration's name is empty; name one")
        elif isinstance(key, bool) or not isinstance(key, int) or key < 1:
            raise ConfigError(f"fixed k ({key!r}) must be a positive integer")
        self._key: PointKey = key
        self._points = operating_points(points) if points else ()
        self.changes: deque[PointChange] = deque(maxlen=MAX_CHANGES_KEPT)
        self.change_count = 0

    @property
    def current(self) -> PointKey:
        return self._key

    @property
    def keys(self) -> tuple[PointKey, ...]:
        return (self._key,)

    def observe(self, obs: Observation, now: float) -> PointKey:
        return self._key

    def describe(self) -> dict:
        return {
            "mode": self.mode,
            "serving": self._key,
            "chosen_on": _chosen_on(list(self._points)),
            "operating_points": [p.to_dict() for p in self._points],
        }


@dataclass(frozen=True)
class PolicyConfig:
    """Settings of the adaptive policy.

    slo_ms: latency objective for the queueing delay. hold_s: how long the load must stay low
    before k is raised by one point (and the least time between a change and a raise).
    restore_utilization: a raise needs the arrival rate to use at most this fraction of the
    higher k's rate; restore_fraction: ... the queue to drain at the higher k, and the oldest
    waiting request to have waited, within this fraction of the objective.
    rate_smoothing: weight of each new measured/predicted rate ratio in its running average."""

    slo_ms: float = 100.0
    hold_s: float = 2.0
    restore_fraction: float = 1.0
    restore_utilization: float = 0.7
    rate_smoothing: float = 0.3

    def __post_init__(self) -> None:
        _number("slo_ms", self.slo_ms, lambda v: v > 0, "a positive number of milliseconds")
        _number("hold_s", self.hold_s, lambda v: v >= 0, "a number of seconds >= 0")
        for name in ("restore_fraction", "restore_utilization", "rate_smoothing"):
            _number(name, getattr(self, name), lambda v: 0 < v <= 1, "a number in (0, 1]")


class AdaptivePolicy:
    """Steps down the table (fewer students, more multiplexing) when the queue's delay exceeds
    the objective, back up when the load has stayed low (see the module docstring)."""

    mode = "adaptive"

    def __init__(
        self,
        points: PointTable,
        config: PolicyConfig | None = None,
        *,
        start: PointKey | None = None,
    ):
        self.points = operating_points(points)
        self.config = config or PolicyConfig()
        self.slo_s = self.config.slo_ms / 1000.0
        keys = [p.key for p in self.points]
        if start is None:
            self._i = 0
        elif start in keys:
            self._i = keys.index(start)
        else:
            raise ConfigError(f"start point ({start!r}) must be one of the operating points {keys}")
        self._scale = 1.0  # measured / predicted rate, smoothed
        self._quiet_since: float | None = None
        self._last_change = -math.inf
        self.changes: deque[PointChange] = deque(maxlen=MAX_CHANGES_KEPT)
        self.change_count = 0

    @property
    def current(self) -> PointKey:
        return self.points[self._i].key

    @property
    def keys(self) -> tuple[PointKey, ...]:
        return tuple(p.key for p in self.points)

    @property
    def rate_scale(self) -> float:
        """Measured over predicted throughput (1.0 until a full batch has been timed)."""
        return self._scale

    def rate(self, i: int) -> float:
        """Expected examples/second of point `i`: its prediction times the measured correction."""
        return self.points[i].examples_per_second * self._scale

    def drain_seconds(self, i: int, queue_length: int, arrival_rate: float | None) -> float:
        """Seconds to serve `queue_length` examples at point `i` while arrivals go on."""
        if queue_length <= 0:
            return 0.0
        spare = self.rate(i) - (arrival_rate or 0.0)
        return queue_length / spare if spare > 0 else math.inf

    def observe(self, obs: Observation, now: float) -> PointKey:
        """Update with one observation at time `now` (seconds); returns the point to run."""
        if obs.service_rate is not None and obs.service_rate > 0:
            ratio = obs.service_rate / self.points[self._i].examples_per_second
            a = self.config.rate_smoothing
            self._scale = min(20.0, max(0.05, (1 - a) * self._scale + a * ratio))
        q, lam = obs.queue_length, obs.arrival_rate
        delay = self.drain_seconds(self._i, q, lam)
        if delay > self.slo_s:
            self._quiet_since = None
            target = next(
                (i for i in range(len(self.points)) if self.drain_seconds(i, q, lam) <= self.slo_s),
                len(self.points) - 1,
            )
            if target > self._i:
                self._change(
                    now,
                    target,
                    f"queue of {q} examples needs {_ms(delay)} at {self.points[self._i].name} "
                    f"(objective {_ms(self.slo_s)})",
                )
            return self.current
        if self._i == 0 or not self._is_quiet(obs):
            self._quiet_since = None
            return self.current
        if self._quiet_since is None:
            self._quiet_since = now
        hold = self.config.hold_s
        if now - self._quiet_since >= hold and now - self._last_change >= hold:
            self._change(now, self._i - 1, f"load low for {now - self._quiet_since:.1f} s")
            self._quiet_since = now  # the next step up waits a hold period of its own
        return self.current

    def _is_quiet(self, obs: Observation) -> bool:
        up = self._i - 1
        limit = self.config.restore_fraction * self.slo_s
        lam = obs.arrival_rate or 0.0
        return (
            self.drain_seconds(up, obs.queue_length, obs.arrival_rate) <= limit
            and obs.oldest_wait_s <= limit
            and lam <= self.config.restore_utilization * self.rate(up)
        )

    def _change(self, now: float, i: int, reason: str) -> None:
        self.changes.append(PointChange(now, self.current, self.points[i].key, reason))
        self.change_count += 1
        self._i = i
        self._last_change = now

    def describe(self) -> dict:
        return {
            "mode": self.mode,
            "serving": self.current,
            **asdict(self.config),
            "rate_scale": self._scale,
            "chosen_on": _chosen_on(list(self.points)),
            "operating_points": [p.to_dict() for p in self.points],
        }


def _number(name: str, v: object, ok: Callable[[float], bool], rule: str) -> float:
    if (
        isinstance(v, bool)
        or not isinstance(v, int | float)
        or not math.isfinite(v)
        or not ok(float(v))
    ):
        raise ConfigError(f"{name} ({v!r}) must be {rule}")
    return float(v)


def _ms(seconds: float) -> str:
    return "an unbounded time" if math.isinf(seconds) else f"{seconds * 1000:.0f} ms"
