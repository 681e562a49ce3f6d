"""Regret of what a user gets from `autoprumux search` then `autoprumux recommend`, replayed
on measured configurations, in two modes side by side.

    python benchmarks/search_regret.py \
        --grid benchmarks/results/reference_grid_sst2_cpu.json \
        --measured benchmarks/results/frontier_long_recovery_sst2_cpu.json \
        --budgets 0.5 1 2 3 5 10 --trials 8 --measured-trials 6 \
        --samplers guided tpe random grid --seeds 3 \
        --out benchmarks/results/search_regret_sst2_cpu.json

**interpolated** (`--grid`): the CLI's own search space (`--space`, default
search_spaces/prumux.yaml: sparsity 0 to 0.95 in steps of 0.05 x N in {1, 2, 4}), fp32 only (the
reference grids hold no int8), each configuration's loss and speedup interpolated linearly in
sparsity between the grid's measured points: most of its configurations were never measured,
and they are monotone by construction.

**measured** (`--measured FILE...`): only the configurations those results files measured,
with their precision: the space's dimensions are the measured values (sparsity, N, precision,
and per-instance layers and combiner where N > 1), and every configuration of that space must
have been measured (`--precisions int8` searches the int8 rows alone, e.g. of a path measured
in int8 at every level). The files must hold one machine's rows, one recipe and one baseline (the
script refuses a mix and names what differs).

**Noise** (`--noisy MODE...`, default: measured): instead of the file's loss, each replayed
trial reports that loss plus one draw of the configuration's measured spread. The spreads come
from the results files themselves: every configuration (task, recipe, sparsity, N, layers,
combiner; fp32 rows) measured more than once with different losses gives its own standard
deviation; same-valued repeats are one computation (a cache hit or a bit-identical rerun on a
CPU) and add nothing; int8 rows are not compared, since their loss also depends on the CPU and
on a rounding scheme the rows do not record. Next, a row that records the spread of its seeded
dev pairings (`metric_std`, N > 1) gives that of their mean. A configuration with neither takes
the pooled spread of the task's repeated configurations of its N, else of the whole task, else
the dev set's binomial noise; the baseline (s=0, N=1) has none (loss 0 by definition). One
draw per trained model and seed (its fp32 and int8 share it: int8 converts the same pruned
model, and a repeated trial hits the same cached model); seed k is the same noise for every
sampler and budget. Speedups are replayed as measured.

For every mode, budget, sampler and seed this runs the real search service: `Searcher`, a real
SQLite Optuna study, a real MLflow store, early stopping with the CLI's default margin, and the
mode's trials (pruned and failed trials count). Only a trial's evaluation is replayed (the
unpruned N-way model's loss is reported at step 0, as the real pipeline does, so hopeless
trials are pruned as they would be). Then `recommend()`, the function the CLI and the served
model call, answers the budget from the study.

**Validation chooses, dev reports** (as the service does, `autoprumux._selection`): a replayed
trial's validation loss, which the search and `recommend` choose on, is the row's measured
validation loss (rows measured on a split carved from train record one; older rows and the
interpolated grid fall back to the dev loss), plus the noise draw above; its dev loss is the
file's measured dev loss, which the answer is judged by.

Regret = 1 - (measured speedup of the answer) / (best measured speedup among the mode's
configurations whose measured dev loss is within the budget, the baseline's 1.00x included); a
violation is an answer whose dev loss exceeds the budget: each run records the answer's
`dev_loss`, the `validation_loss` it was chosen on, and `dev_excess` (how far its dev loss is
beyond the budget, 0 within it); each budget's summary says whether every answer's dev loss
is within the budget (`dev_within_budget`) and by how much it is not (`dev_excess_max`). A
violating answer's regret (maybe negative) is kept in its run; the summaries average the
answers within the budget.
**Search regret** = 1 - (speedup of the answer) / (speedup of the fastest configuration whose
measured validation loss is within the budget): the answer measuring every configuration would
give. It is what the search's trials cost; regret beyond it comes from validation and dev
disagreeing, which no number of trials removes.
Guided runs one seed without noise (it is deterministic), every seed with it. Prints markdown;
JSON (`--out`) to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import bisect
import dataclasses
import json
import logging
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from _results import machine, write_json

from autoprumux._selection import (
    VALIDATION,
    PathPoint,
    RecordedLosses,
    pooled_selection_losses,
    selection_loss,
)
from autoprumux.config import DEVICE_PRECISIONS, MUX_COMBINERS, PRECISIONS, Candidate, Recipe
from autoprumux.evaluation import Evaluation, Measured, ThroughputConfig
from autoprumux.meta import recommend
from autoprumux.pipeline import DEV_PAIRINGS, last_stage
from autoprumux.search import Searcher, SearchSettings, SearchSpace

MODES = ("interpolated", "measured")
RESULTS = Path("benchmarks/results")
# a trained model: (sparsity, N, per-instance layers, combiner); its precisions share it
ModelKey = tuple[float, int, int, str]


def model_key(sparsity: float, n: int, mux_layers: int = 0, combiner: str = "binding") -> ModelKey:
    if n == 1:
        mux_layers, combiner = 0, "binding"
    return (round(float(sparsity), 6), int(n), int(mux_layers), str(combiner))


def describe(cfg: Candidate) -> str:
    if cfg.is_baseline:
        return "baseline"
    late = f" k={cfg.mux_layers} {cfg.mux_combiner}" if cfg.mux > 1 and cfg.mux_layers else ""
    return f"s={cfg.sparsity:g} N={cfg.mux}{late} {cfg.precision}"


def recipe_key(recipe: dict[str, Any]) -> str:
    """A results file's recipe with every field of today's Recipe (absent ones at their default;
    fields Recipe no longer has dropped), as canonical JSON: two files measured the same recipe
    iff their keys are equal."""
    known = {f.name for f in dataclasses.fields(Recipe)}
    r = Recipe(**{k: v for k, v in recipe.items() if k in known})
    return json.dumps(dataclasses.asdict(r), sort_keys=True)


def row_machine(row: dict[str, Any], doc: dict[str, Any]) -> str:
    return str(row.get("machine") or doc.get("machine") or "not recorded")


class GridTable:
    """The reference grid's measured (loss, speedup) per (sparsity, N), interpolated linearly in
    sparsity between measured points of the same N (fp32 rows only)."""

    mode = "interpolated"

    def __init__(self, path: Path):
        d = json.loads(Path(path).read_text())
        self.path = Path(path)
        self.paths = [self.path]
        self.task: str = d["task"]
        self.device: str = str(d.get("device", "cpu"))
        self.baseline_metric = float(d["baseline"]["metric"])
        self.recipe = recipe_key(d.get("recipe", {}))
        self.recipe_fields: dict[str, Any] = json.loads(self.recipe)
        self.machines = sorted({row_machine(r, d) for r in d["rows"]})
        self.rows: dict[int, list[tuple[float, float, float]]] = {}
        for r in d["rows"]:
            if r.get("precision", "fp32") != "fp32":
                continue  # the search replays the fp32 grid
            self.rows.setdefault(int(r["n"]), []).append(
                (float(r["target_sparsity"]), float(r["accuracy_loss"]), float(r["speedup"]))
            )
        for pts in self.rows.values():
            pts.sort()

    def covers(self, sparsity: float, n: int) -> bool:
        pts = self.rows.get(n, [])
        return bool(pts) and pts[0][0] - 1e-9 <= sparsity <= pts[-1][0] + 1e-9

    def at(self, sparsity: float, n: int) -> tuple[float, float]:
        """(accuracy loss, speedup); the baseline is loss 0, 1.00x by definition."""
        if n == 1 and sparsity == 0.0:
            return 0.0, 1.0
        pts = self.rows[n]
        xs = [p[0] for p in pts]
        j = bisect.bisect_left(xs, sparsity - 1e-9)
        if j < len(xs) and abs(xs[j] - sparsity) < 1e-9:
            return pts[j][1], pts[j][2]
        lo, hi = pts[j - 1], pts[j]
        w = (sparsity - lo[0]) / (hi[0] - lo[0])
        return lo[1] + w * (hi[1] - lo[1]), lo[2] * (hi[2] / lo[2]) ** w

    def truth(self, cfg: Candidate) -> tuple[float, float]:
        if cfg.precision != "fp32" or (cfg.mux > 1 and cfg.mux_layers):
            raise KeyError(f"the reference grid {self.path} holds no {describe(cfg)}")
        return self.at(cfg.sparsity, cfg.mux)

    def unpruned_loss(self, cfg: Candidate) -> float | None:
        return self.at(0.0, cfg.mux)[0]

    def validation_loss(self, cfg: Candidate) -> float:
        """The grid records dev losses only: its validation loss is the dev loss."""
        return self.truth(cfg)[0]

    def recorded(self, cfg: Candidate) -> tuple[float, float | None]:
        """(validation loss, its SE): the dev loss, without an SE."""
        return self.truth(cfg)[0], None

    def measured_at(self, cfg: Candidate) -> bool:
        return cfg.is_baseline or any(
            abs(s - cfg.sparsity) < 1e-9 for s, _, _ in self.rows[cfg.mux]
        )

    def space(self, path: Path) -> SearchSpace:
        """The CLI's space at `path`, without its precision dimension (the grid is fp32)."""
        space = SearchSpace.from_yaml(path).with_task(self.task)
        if "precision" in space.params:
            fp32_only = space.to_dict()
            fp32_only["params"].pop("precision")
            space = SearchSpace.from_dict(fp32_only, source=str(path))
        outside = [c for c in space.grid() if not self.covers(c.sparsity, c.mux)]
        if outside:
            raise SystemExit(
                f"the space {path} has {len(outside)} configurations outside the grid "
                f"{self.path} (e.g. {describe(outside[0])}); measure them or narrow the space"
            )
        return space


class MeasuredTable:
    """The configurations some results files measured, and nothing in between: (sparsity, N,
    precision, per-instance layers, combiner) -> (loss, speedup). The files must share one
    machine, one recipe and one baseline."""

    mode = "measured"

    def __init__(self, paths: Sequence[Path], precisions: Sequence[str] | None = None):
        self.paths = [Path(p) for p in paths]
        # the precisions searched (default: every one measured); the baseline is known anyway
        self.precisions = tuple(precisions) if precisions else None
        docs = [(p, json.loads(p.read_text())) for p in self.paths]
        rows = [
            (p, d, r)
            for p, d in docs
            for r in d["rows"]
            if self.precisions is None or str(r.get("precision") or "fp32") in self.precisions
        ]
        for what, values in (
            ("machine", {row_machine(r, d) for _, d, r in rows}),
            ("task", {d["task"] for _, d in docs}),
            ("device", {str(d.get("device", "cpu")) for _, d in docs}),
            ("recipe", {recipe_key(d.get("recipe", {})) for _, d in docs}),
            ("baseline", {round(float(d["baseline"]["metric"]), 6) for _, d in docs}),
        ):
            if len(values) != 1:
                shown = sorted(map(str, values))[:3]
                if what == "recipe":  # name the fields that differ, not the whole recipes
                    rs = [json.loads(v) for v in values]
                    shown = [k for k in rs[0] if len({json.dumps(r[k]) for r in rs}) > 1]
                raise SystemExit(
                    f"the measured files {[str(p) for p in self.paths]} mix {len(values)} "
                    f"{what}s ({shown}); replay one machine's rows of one recipe"
                )
        self.points: dict[tuple[ModelKey, str], tuple[float, float]] = {}
        # (validation loss, its paired SE) of rows that measured one
        self.validation: dict[tuple[ModelKey, str], tuple[float, float | None]] = {}
        self.sources: dict[tuple[ModelKey, str], str] = {}
        for path, _, r in rows:
            key = (
                model_key(
                    r["target_sparsity"],
                    r["n"],
                    r.get("mux_layers") or 0,
                    r.get("combiner") or "binding",
                ),
                str(r.get("precision") or "fp32"),
            )
            if key in self.points:
                raise SystemExit(
                    f"{path} measures {key} again (first in {self.sources[key]}); replay "
                    "one measurement per configuration"
                )
            self.points[key] = (float(r["accuracy_loss"]), float(r["speedup"]))
            if r.get("validation_loss") is not None:
                se = r.get("validation_loss_se")
                self.validation[key] = (
                    float(r["validation_loss"]),
                    None if se is None else float(se),
                )
            self.sources[key] = path.name
        d0 = docs[0][1]
        self.task = d0["task"]
        self.device = str(d0.get("device", "cpu"))
        self.recipe = recipe_key(d0.get("recipe", {}))
        self.recipe_fields = json.loads(self.recipe)
        self.baseline_metric = float(d0["baseline"]["metric"])
        self.machines = sorted({row_machine(r, d) for _, d, r in rows})
        base = (model_key(0.0, 1), "fp32")
        self.points[base] = (0.0, 1.0)  # the baseline is loss 0, 1.00x by definition
        self.sources.setdefault(base, "definition")

    def _key(self, cfg: Candidate) -> tuple[ModelKey, str]:
        return model_key(cfg.sparsity, cfg.mux, cfg.mux_layers, cfg.mux_combiner), cfg.precision

    def truth(self, cfg: Candidate) -> tuple[float, float]:
        return self.points[self._key(cfg)]

    def unpruned_loss(self, cfg: Candidate) -> float | None:
        key = (model_key(0.0, cfg.mux, cfg.mux_layers, cfg.mux_combiner), "fp32")
        if key not in self.points:
            return None
        return self.validation.get(key, (self.points[key][0], None))[0]

    def recorded(self, cfg: Candidate) -> tuple[float, float | None]:
        """(validation loss, its SE) of the row, or its dev loss without an SE for rows
        measured without a validation split."""
        key = self._key(cfg)
        return self.validation.get(key, (self.points[key][0], None))

    def validation_loss(self, cfg: Candidate) -> float:
        """The row's measured loss that chooses on its own (its validation loss plus its
        standard error margin, `autoprumux._selection.selection_loss`), or its dev loss for rows
        measured without a validation split."""
        val, se = self.recorded(cfg)
        return selection_loss(val, val, se)

    def measured_at(self, cfg: Candidate) -> bool:
        return self._key(cfg) in self.points

    def space(self, path: Path) -> SearchSpace:
        """The space whose dimensions are the measured values: sparsity, N, precision, and the
        per-instance layers and combiner of N > 1 rows (each searched only where it varies)."""
        keys = list(self.points)
        late = [k for k, _ in keys if k[1] > 1]
        params: dict[str, Any] = {
            "sparsity": {"choices": sorted({k[0] for k, _ in keys})},
            "mux": {"choices": sorted({k[1] for k, _ in keys})},
            "precision": {
                "choices": sorted(
                    {p for _, p in keys if self.precisions is None or p in self.precisions},
                    key=PRECISIONS.index,
                )
            },
        }
        if late and {(k[2], k[3]) for k in late} != {(0, "binding")}:
            params["mux_layers"] = {"choices": sorted({k[2] for k in late})}
            params["mux_combiner"] = {
                "choices": sorted({k[3] for k in late}, key=MUX_COMBINERS.index)
            }
        space = SearchSpace.from_dict(
            {
                "name": "measured",
                "task": self.task,
                "model": None,
                "recipe": self.recipe_fields,
                "params": params,
            },
            source=", ".join(p.name for p in self.paths),
        )
        missing = [c for c in space.grid() if not self.measured_at(c)]
        if missing:
            raise SystemExit(
                f"the space of the measured values has {len(missing)} configurations the files "
                f"never measured ({', '.join(describe(c) for c in missing[:4])}); measure them "
                "or pass files whose rows form a full product"
            )
        return space


# ---- measured spreads ------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Spread:
    sd: float
    source: str


class Spreads:
    """The spread (standard deviation, points) of one measured loss per trained model, from the
    configurations the results files measured more than once (see the module docstring)."""

    def __init__(self, results: Path, task: str, recipe: str, dev_noise: float):
        self.task, self.recipe, self.dev_noise = task, recipe, dev_noise
        # (task, recipe, model) -> (sd of the reported mean over pairings, where)
        self.pairings: dict[tuple[str, str, ModelKey], tuple[float, str]] = {}
        groups: dict[tuple[str, str, ModelKey], dict[float, list[str]]] = {}
        for path in sorted(results.glob("*.json")):
            try:
                d = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            rows = d.get("rows") if isinstance(d, dict) else None
            if not isinstance(rows, list) or "task" not in d or "recipe" not in d:
                continue
            rk = recipe_key(d["recipe"])
            for r in rows:
                if not isinstance(r, dict) or "n" not in r:
                    continue
                if (r.get("precision") or "fp32") != "fp32":
                    continue
                mk = model_key(
                    r.get("target_sparsity", 0.0),
                    r["n"],
                    r.get("mux_layers") or 0,
                    r.get("combiner") or "binding",
                )
                where = f"{path.name} ({row_machine(r, d)})"
                key = (d["task"], rk, mk)
                if r.get("metric_std"):  # the spread of the seeded dev pairings' metrics
                    sd = float(r["metric_std"]) / math.sqrt(r.get("pairings", DEV_PAIRINGS))
                    self.pairings.setdefault(key, (sd, where))
                if "accuracy_loss" in r:
                    loss = round(float(r["accuracy_loss"]), 6)
                    groups.setdefault(key, {}).setdefault(loss, []).append(where)
        # configurations with at least two different losses: (task, recipe, model) -> losses
        self.repeats = {k: v for k, v in groups.items() if len(v) > 1}

    @staticmethod
    def _pooled(groups: Iterable[dict[float, list[str]]]) -> tuple[float, int]:
        ss, df = 0.0, 0
        for g in groups:
            xs = list(g)
            m = statistics.fmean(xs)
            ss += sum((x - m) ** 2 for x in xs)
            df += len(xs) - 1
        return (math.sqrt(ss / df) if df else float("nan")), df

    def of(self, mk: ModelKey) -> Spread:
        if mk == model_key(0.0, 1):
            return Spread(0.0, "none: the baseline loses 0 by definition")
        own = self.repeats.get((self.task, self.recipe, mk))
        if own is not None:
            sd, _ = self._pooled([own])
            runs = "; ".join(f"{x:.2f} in {', '.join(w)}" for x, w in sorted(own.items()))
            return Spread(sd, f"own: {runs}")
        pairing = self.pairings.get((self.task, self.recipe, mk))
        if pairing is not None:
            return Spread(pairing[0], f"own dev pairings: {pairing[1]}")
        same_n = [g for (t, _, k), g in self.repeats.items() if t == self.task and k[1] == mk[1]]
        if same_n:
            sd, _ = self._pooled(same_n)
            return Spread(
                sd, f"pooled over the {len(same_n)} repeated {self.task} N={mk[1]} models"
            )
        same_task = [g for (t, _, _), g in self.repeats.items() if t == self.task]
        if same_task:
            sd, _ = self._pooled(same_task)
            return Spread(sd, f"pooled over the {len(same_task)} repeated {self.task} models")
        return Spread(self.dev_noise, "the dev set's binomial noise (nothing repeated)")

    def to_dict(self) -> dict[str, list[dict[str, Any]]]:
        """Every repeated configuration and every pairing spread found, each recipe as its
        fields that differ from today's defaults."""
        default = json.loads(recipe_key({}))

        def where(t: str, rk: str, mk: ModelKey) -> dict[str, Any]:
            recipe = {k: v for k, v in json.loads(rk).items() if default.get(k) != v}
            n, layers, combiner = mk[1:]
            return {"task": t, "recipe": recipe, "sparsity": mk[0], "n": n} | (
                {"mux_layers": layers, "combiner": combiner} if layers else {}
            )

        return {
            "repeats": [
                where(*k)
                | {"losses": {f"{x:.4f}": w for x, w in sorted(g.items())}}
                | {"sd": self._pooled([g])[0]}
                for k, g in sorted(self.repeats.items(), key=lambda kv: (kv[0][0], kv[0][2]))
            ],
            "pairings": [
                where(*k) | {"sd": sd, "file": w}
                for k, (sd, w) in sorted(self.pairings.items(), key=lambda kv: kv[0][2])
            ],
        }


# ---- the replayed trial --------------------------------------------------------------------
class ReplayEvaluator:
    """A trial evaluator (see `autoprumux.search.TrialEvaluator`) that answers from a table:
    its measured (or interpolated) loss, plus, with `spreads`, one draw per trained model and
    `seed` of its measured spread."""

    def __init__(
        self,
        table: Any,
        dev_size: int,
        train_size: int,
        prune_stages: int,
        spreads: Spreads | None = None,
        seed: int = 0,
        recipe: Recipe | None = None,
        validation_size: int = 0,
    ):
        self.table = table
        self.recipe = recipe
        self.model_id = "replay-all-MiniLM-L6-v2"
        self.dev_size = dev_size
        self.validation_size = validation_size  # the split the search chooses on
        self.train_size = train_size
        self.prune_stages = prune_stages
        self.spreads = spreads
        self.seed = seed

    def descriptors(self) -> dict[str, float]:
        task = self.table.task
        return {
            "task_num_labels": 2,
            "task_pair": int(task in ("mrpc", "qnli")),
            "task_mcc": int(task == "cola"),
            "task_log_train": round(math.log(self.train_size), 6),
            "model_layers": 6,
            "model_hidden": 384,
            "model_log_params": round(math.log(1.78e7), 6),
            "device_cuda": int(self.table.device.startswith("cuda")),
        }

    def check_lengths(self, n: int, tp: ThroughputConfig | None = None) -> None:
        return None

    def baseline_metrics(self) -> dict[str, float]:
        m = self.table.baseline_metric
        return {"metric": m, "accuracy": m}

    def offset(self, mk: ModelKey) -> float:
        """The noise of one trained model in this seed's replay (0 without spreads): the same
        for every sampler, budget and precision of the model."""
        if self.spreads is None:
            return 0.0
        import numpy as np

        sd = self.spreads.of(mk).sd
        combiner = MUX_COMBINERS.index(mk[3])
        rng = np.random.default_rng([self.seed, round(mk[0] * 1e6), mk[1], mk[2], combiner])
        return float(rng.normal(0.0, sd)) if sd > 0 else 0.0

    def replayed_loss(self, cfg: Candidate) -> float:
        """The replayed validation loss: the file's validation loss (its dev loss where it
        records none) plus this seed's draw; its SE is the file's (`table.recorded`)."""
        mk = model_key(cfg.sparsity, cfg.mux, cfg.mux_layers, cfg.mux_combiner)
        return self.table.recorded(cfg)[0] + self.offset(mk)

    def evaluate(
        self,
        config: Candidate,
        *,
        throughput: ThroughputConfig | None = None,
        on_stage: Any = None,
    ) -> Evaluation:
        sparsity, n = config.sparsity, config.mux
        unpruned = self.table.unpruned_loss(config)
        if on_stage is not None and n > 1 and unpruned is not None:
            mk = model_key(0.0, n, config.mux_layers, config.mux_combiner)
            on_stage(0, unpruned + self.offset(mk), unpruned + self.offset(mk))
        loss, speed = self.replayed_loss(config), self.table.truth(config)[1]
        if on_stage is not None and sparsity > 0:
            # the step the search treats as the last (a pruned late model reports one)
            last = self.prune_stages if self.recipe is None else last_stage(self.recipe, config)
            on_stage(last, self.table.truth(config)[0], loss)
        se = self.table.recorded(config)[1]
        return self._evaluation(config, self.table.truth(config)[0], loss, speed, throughput, se)

    def evaluate_students(self, k: int, depth: int, **kw: Any) -> Evaluation:
        raise RuntimeError("the replayed tables hold no students")

    def _evaluation(
        self,
        cfg: Candidate,
        dev_loss: float,
        validation_loss: float,
        speed: float,
        tp: ThroughputConfig | None,
        validation_se: float | None = None,
    ) -> Evaluation:
        base = self.table.baseline_metric

        def measured(
            name: str, s: float, nn: int, loss: float, val: float, rate: float
        ) -> Measured:
            # replayed: throughput relative to the baseline's 1.0, FLOPs as their inverse
            metric = base - loss
            return Measured(
                name,
                s,
                nn,
                metric,
                metric,
                rate,
                1.0 / rate,
                0,
                1.0 / rate,
                validation_metric=base - val,
                validation_accuracy=base - val,
            )

        return Evaluation(
            task=self.table.task,
            metric_name="accuracy",
            device=self.table.device,
            baseline=measured("baseline", 0.0, 1, 0.0, 0.0, 1.0),
            candidate=measured(
                describe(cfg), cfg.sparsity, cfg.mux, dev_loss, validation_loss, speed
            ),
            throughput_config=tp or ThroughputConfig(),
            validation_loss_se=validation_se,
        )


def dataset_sizes(recipe: Recipe, task: str) -> tuple[int, int, int]:
    """(dev, train, validation split) sizes of the task as the pipeline loads them (the split
    held out of train, see `autoprumux.data.validation_size`)."""
    from autoprumux.data import load_task, validation_size

    data = load_task(task, max_train_examples=recipe.max_train_examples)
    labels = [e.label for e in data.train]
    held = validation_size(labels, recipe.validation_examples, recipe.batch_size)[0]
    return len(data.dev), len(data.train), held


def run_one(
    space: SearchSpace,
    evaluator: ReplayEvaluator,
    work: Path,
    name: str,
    sampler: str,
    budget: float,
    trials: int,
    seed: int,
) -> dict[str, Any]:
    settings = SearchSettings(
        space=space,
        trials=trials,
        storage=f"sqlite:///{work / 'optuna.db'}",
        study_name=name,
        tracking_uri=f"sqlite:///{work / 'mlflow.db'}",
        budget=budget,
        sampler=sampler,
        seed=seed,
        show_progress=False,
    )
    t0 = time.perf_counter()
    searcher = Searcher(settings, evaluator=lambda variant: evaluator)
    searcher.run()
    seconds = time.perf_counter() - t0
    trials_ = searcher.study.get_trials()
    states = [t.state.name for t in trials_]
    configs = [t.user_attrs.get("config") for t in trials_]
    rec = recommend(budget, storage=settings.storage, study=name)
    cfg = Candidate(
        sparsity=rec.sparsity,
        mux=rec.mux,
        precision=rec.precision,
        mux_layers=rec.mux_layers,
        mux_combiner=rec.mux_combiner,
    )
    loss, speed = evaluator.table.truth(cfg)
    return {
        "answer": {
            "config": describe(cfg),
            "source": rec.source,
            "chosen_on": rec.chosen_on,
            "study_validation_loss": rec.validation_loss,
            "study_dev_loss": rec.accuracy_loss,
        },
        # the answer's dev loss (the file's measurement) and the loss it was chosen on
        "loss": loss,
        "dev_loss": loss,
        "validation_loss": rec.accuracy_loss
        if rec.validation_loss is None
        else rec.validation_loss,
        "speedup": speed,
        "evaluations": len(states),
        "pruned": states.count("PRUNED"),
        "failed": states.count("FAIL"),
        "int8_trials": sum(1 for c in configs if c and c.get("precision") == "int8"),
        "search_seconds": seconds,
    }


def run_mode(
    table: Any,
    space: SearchSpace,
    spreads: Spreads | None,
    args: argparse.Namespace,
    trials: int,
    work: Path,
    dev: int,
    train: int,
    held: int = 0,
) -> dict[str, Any]:
    grid = space.grid()
    truth = [(c, *table.truth(c)) for c in grid]
    chosen = pooled_selection_losses(
        [
            PathPoint(
                c.sparsity_kind,
                c.sparsity,
                RecordedLosses(dev, val, VALIDATION, se),
            )
            for (c, dev, _), (val, se) in zip(truth, map(table.recorded, grid), strict=True)
        ]
    )
    results = []
    for budget in args.budgets:
        best_cfg, _, best = max(
            ((c, loss, sp) for c, loss, sp in truth if loss <= budget), key=lambda x: x[2]
        )
        # what measuring every configuration and choosing on validation (pooled along
        # sparsity, as the service's answer reads it) answers: the search's own regret is
        # against this, the rest is validation and dev disagreeing
        every_cfg, every = max(
            ((c, sp) for (c, _, sp), loss in zip(truth, chosen, strict=True) if loss <= budget),
            key=lambda x: x[1],
        )
        for sampler in args.samplers:
            seeds = 1 if sampler == "guided" and spreads is None else args.seeds
            runs = []
            for seed in range(seeds):
                ev = ReplayEvaluator(
                    table,
                    dev,
                    train,
                    space.recipe.prune_stages,
                    spreads=spreads,
                    seed=seed,
                    recipe=space.recipe,
                    validation_size=held,
                )
                name = f"{table.mode}-{sampler}-b{budget:g}-s{seed}"
                r = run_one(space, ev, work, name, sampler, budget, trials, seed)
                r["seed"] = seed
                r["regret"] = 1.0 - r["speedup"] / best
                r["search_regret"] = 1.0 - r["speedup"] / every
                r["violation"] = r["loss"] > budget + 1e-9
                r["dev_excess"] = max(0.0, r["dev_loss"] - budget)
                runs.append(r)
                print(
                    f"{table.mode} budget {budget:g} {sampler} seed {seed}: "
                    f"{r['answer']['config']} ({r['speedup']:.2f}x, chosen at validation loss "
                    f"{r['validation_loss']:.2f}, dev loss {r['dev_loss']:.2f}; best {best:.2f}x) "
                    f"regret {r['regret']:.1%}{' VIOLATION' if r['violation'] else ''}",
                    file=sys.stderr,
                    flush=True,
                )
            # a violating answer is no answer to the budget: its (maybe negative) regret is
            # kept in its run and counted as a violation, not averaged in
            regrets = [r["regret"] for r in runs if not r["violation"]]
            results.append(
                {
                    "budget": budget,
                    "sampler": sampler,
                    "trials": trials,
                    "best": describe(best_cfg),
                    "best_speedup": best,
                    "regret_mean": statistics.fmean(regrets) if regrets else None,
                    "regret_sd": statistics.stdev(regrets) if len(regrets) > 1 else 0.0,
                    "regret_max": max(regrets, default=None),
                    "every_configuration": describe(every_cfg),
                    "every_configuration_speedup": every,
                    "search_regret_mean": statistics.fmean(r["search_regret"] for r in runs),
                    "search_regret_max": max(r["search_regret"] for r in runs),
                    "violations": sum(r["violation"] for r in runs),
                    # the dev loss of every answer chosen on validation, against the budget
                    "dev_within_budget": not any(r["violation"] for r in runs),
                    "dev_excess_max": max(r["dev_excess"] for r in runs),
                    "int8_trials_mean": statistics.fmean(r["int8_trials"] for r in runs),
                    "runs": runs,
                }
            )
    measured = sum(table.measured_at(c) for c in grid)
    noise = None
    if spreads is not None:
        models = sorted({model_key(c.sparsity, c.mux, c.mux_layers, c.mux_combiner) for c in grid})
        noise = [
            {"sparsity": k[0], "n": k[1], "mux_layers": k[2], "combiner": k[3]}
            | dataclasses.asdict(spreads.of(k))
            for k in models
        ]
    return {
        "mode": table.mode,
        "files": [str(p) for p in table.paths],
        "task": table.task,
        "rows_machine": table.machines,
        "baseline_metric": table.baseline_metric,
        "space": space.to_dict()["params"],
        "configurations": len(grid),
        "measured_configurations": measured,
        "precisions": sorted({c.precision for c in grid}),
        "trials": trials,
        "noise": noise,
        "results": results,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--grid", type=Path, help="a reference grid: the interpolated mode")
    ap.add_argument(
        "--measured", type=Path, nargs="+", help="one machine's results files: the measured mode"
    )
    ap.add_argument("--space", type=Path, default=Path("search_spaces/prumux.yaml"))
    ap.add_argument("--budgets", type=float, nargs="+", default=[0.5, 1, 2, 3, 5, 10])
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument(
        "--precisions",
        nargs="+",
        choices=DEVICE_PRECISIONS["cpu"],
        default=None,
        help="measured mode: search only these precisions (default: every one measured), e.g. "
        "a path measured in int8 at every level and in fp32 only unpruned",
    )
    ap.add_argument("--measured-trials", type=int, default=None, help="default: --trials")
    ap.add_argument("--samplers", nargs="+", default=["guided", "tpe", "random", "grid"])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument(
        "--noisy",
        nargs="*",
        choices=MODES,
        default=["measured"],
        help="the modes whose replayed losses carry the measured spreads (none: --noisy)",
    )
    ap.add_argument("--results", type=Path, default=RESULTS, help="where spreads are looked up")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    if args.grid is None and not args.measured:
        ap.error("give --grid (interpolated mode), --measured (measured mode) or both")
    logging.getLogger("autoprumux").setLevel(logging.ERROR)
    logging.getLogger("autoprumux.search").setLevel(logging.ERROR)

    tables: list[tuple[Any, int]] = []
    if args.grid is not None:
        tables.append((GridTable(args.grid), args.trials))
    if args.measured:
        tables.append(
            (MeasuredTable(args.measured, args.precisions), args.measured_trials or args.trials)
        )
    modes = []
    with tempfile.TemporaryDirectory(prefix="search-regret-") as d:
        for table, trials in tables:
            space = table.space(args.space)
            dev, train, held = dataset_sizes(space.recipe, table.task)
            spreads = None
            if table.mode in args.noisy:
                from autoprumux.search._guided import loss_noise

                spreads = Spreads(args.results, table.task, table.recipe, loss_noise(held or dev))
            work = Path(d) / table.mode
            work.mkdir()
            modes.append(run_mode(table, space, spreads, args, trials, work, dev, train, held))
            if spreads is not None:
                modes[-1]["repeated_measurements"] = spreads.to_dict()
    first = args.grid or args.measured[0]
    out = Path(args.out or RESULTS / f"search_regret_{Path(first).stem}.json")
    write_json(
        out,
        {
            "machine": machine(),
            "command": "python benchmarks/search_regret.py " + " ".join(argv or sys.argv[1:]),
            "samplers": args.samplers,
            "seeds": args.seeds,
            "modes": modes,
        },
    )
    print(markdown(modes))
    return 0


def cell(r: dict[str, Any]) -> str:
    """Mean regret ± its spread over the seeds whose answer's dev loss is within the budget, and
    how many answers' were not (v) and by how much at most (dev +x)."""
    runs, v = len(r["runs"]), r["violations"]
    miss = f" ({v}/{runs} v, dev +{r['dev_excess_max']:.2f})" if v else ""
    if r["regret_mean"] is None:
        return f"-{miss}"
    sd = f" ± {r['regret_sd']:.1%}" if runs - v > 1 else ""
    return f"{r['regret_mean']:.1%}{sd}{miss}"


def markdown(modes: list[dict[str, Any]]) -> str:
    """One table, budgets down, each mode's best configuration and samplers across: mean regret
    ± its spread over seeds (v: answers whose dev loss is beyond the budget, dev +x: by at most
    x points; the search and `recommend` chose them on the validation loss)."""
    samplers = list(dict.fromkeys(r["sampler"] for m in modes for r in m["results"]))
    budgets = list(dict.fromkeys(r["budget"] for m in modes for r in m["results"]))
    head = ["budget"]
    for m in modes:
        head += [f"{m['mode']}: best"] + [f"{m['mode']}: {s}" for s in samplers]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for b in budgets:
        row = [f"{b:g}"]
        for m in modes:
            rs = {r["sampler"]: r for r in m["results"] if r["budget"] == b}
            any_r = next(iter(rs.values()))
            row.append(f"{any_r['best_speedup']:.2f}x ({any_r['best']})")
            row += [cell(rs[s]) if s in rs else "-" for s in samplers]
        lines.append("| " + " | ".join(row) + " |")
    notes = []
    for m in modes:
        int8 = {
            s: statistics.fmean(r["int8_trials_mean"] for r in m["results"] if r["sampler"] == s)
            for s in samplers
        }
        notes.append(
            f"{m['mode']}: {m['configurations']} configurations ({m['measured_configurations']} "
            f"measured), {m['trials']} trials, noise {'yes' if m['noise'] else 'no'}; int8 trials "
            "per search: " + ", ".join(f"{s} {v:.1f}" for s, v in int8.items())
        )
        beyond = [r for r in m["results"] if not r["dev_within_budget"]]
        notes.append(
            f"{m['mode']}: chosen on the validation loss; the answer's dev loss is within the "
            + (
                "budget at every budget"
                if not beyond
                else "budget except at "
                + ", ".join(
                    f"{r['budget']:g} ({r['sampler']}: +{r['dev_excess_max']:.2f})" for r in beyond
                )
            )
        )
    return "\n".join(lines + [""] + notes + ["", search_regret_table(modes)])


def search_regret_table(modes: list[dict[str, Any]]) -> str:
    """The search's own regret: against the answer of measuring every configuration and
    choosing on validation (what more trials alone could reach); mean over seeds, max beside."""
    samplers = list(dict.fromkeys(r["sampler"] for m in modes for r in m["results"]))
    head = ["budget"]
    for m in modes:
        head += [f"{m['mode']}: every configuration"] + [f"{m['mode']}: {s}" for s in samplers]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for b in dict.fromkeys(r["budget"] for m in modes for r in m["results"]):
        row = [f"{b:g}"]
        for m in modes:
            rs = {r["sampler"]: r for r in m["results"] if r["budget"] == b}
            any_r = next(iter(rs.values()))
            row.append(
                f"{any_r['every_configuration_speedup']:.2f}x ({any_r['every_configuration']})"
            )
            row += [
                f"{rs[s]['search_regret_mean']:.1%} (max {rs[s]['search_regret_max']:.1%})"
                if s in rs
                else "-"
                for s in samplers
            ]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
