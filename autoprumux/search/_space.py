"""Search spaces as data: a YAML file -> validated fixed fields + Optuna distributions.

    name: prumux
    task: sst2
    model: null                 # packaged MiniLM
    recipe: {recovery_steps: 150}
    params:
      sparsity: {low: 0.0, high: 0.95, step: 0.05}
      mux: {choices: [1, 2, 4]}
      mux_variant: {choices: [gaussian]}

Late multiplexing adds two PruMUX dimensions, sampled only for N > 1 (an N=1 configuration has
0 per-instance layers and the binding combiner): `mux_layers` (the encoder layers run per
instance before the N instances are combined, `{choices: [0, 1, 2]}` or `{low: 0, high: 3}`,
each below the model's number of layers) and `mux_combiner` (`{choices: [binding, concat, concat_skip]}`).
A space without them searches early mixing (0, binding) as before.

A space may span techniques: `technique: {choices: [prumux, students]}` adds Academus students
(`students`: K, `student_depth`: d) beside PruMUX (`sparsity`, `mux`, `mux_variant`); each
trial samples the technique first, then only that technique's dimensions. A configuration always
carries every key: a PruMUX one has students = student_depth = 0, a students one has sparsity 0
and N = 1.

Instead of a GLUE `task`, `data` names the user's own labelled text (a CSV, TSV, JSONL or
Parquet file, a directory of split files, or hf:NAME[/CONFIG]; relative paths from the working
directory), with `text_column`, `pair_column`, `label_column` and `dev_fraction` as the flags of
the same names (`autoprumux.data.DataSource`); `metric` (accuracy, f1, mcc) overrides the task's
primary dev metric and `pos_label` the positive class of f1 over two classes (docs/search.md).

Every error names the offending key (as a dotted path) and what is allowed there.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from autoprumux.config import (
    CANDIDATE_DEFAULTS,
    CANDIDATE_FIELDS,
    MAX_MUX,
    MAX_MUX_LAYERS,
    MAX_STUDENTS,
    MUX_COMBINERS,
    MUX_SHAPE_FIELDS,
    MUX_VARIANTS,
    PRECISIONS,
    SAMPLING_ORDER,
    SPLIT_COMBINERS,
    STUDENT_DEPTHS,
    TASK_NAMES,
    TECHNIQUE_FIELDS,
    TECHNIQUES,
    Candidate,
    Recipe,
    field_technique,
    level_of,
)
from autoprumux.errors import ConfigError

if TYPE_CHECKING:
    from autoprumux.data import DataSource

# the keys that describe `data` (DataSource fields), only with it
DATA_KEYS = ("text_column", "pair_column", "label_column", "dev_fraction")
SCORING = ("metric", "pos_label")  # the dev metric, and f1's positive class
TOP_LEVEL_KEYS = ("name", "task", "data", *DATA_KEYS, *SCORING, "model", "recipe", "params")
# the dimensions: every Candidate field, in the order `suggest` samples them (the technique
# first, precision, which applies to every technique, last; see `config.SAMPLING_ORDER`)
PARAMS = SAMPLING_ORDER
# the dimensions only one technique samples (`config.TECHNIQUE_FIELDS`; the other's take their
# neutral values) and those of neither (technique, precision) apply to every configuration; how a
# multiplexed model combines its instances (`config.MUX_SHAPE_FIELDS`) is sampled only when N > 1
EARLY_MIXING: dict[str, Any] = {k: CANDIDATE_DEFAULTS[k] for k in MUX_SHAPE_FIELDS}
# a configuration of one technique holds the other's fields at their defaults
NEUTRAL: dict[str, dict[str, Any]] = {
    t: {k: CANDIDATE_DEFAULTS[k] for o in TECHNIQUES if o != t for k in TECHNIQUE_FIELDS[o]}
    for t in TECHNIQUES
}
# what a space that samples students but not K or d takes (Candidate's 0s mean "no students")
UNSAMPLED_STUDENTS: dict[str, Any] = {"students": 4, "student_depth": 2}
# the keys a range may take (an integer range's step defaults to 1)
RANGE_KEYS = {"sparsity": ("low", "high", "step"), "mux_layers": ("low", "high", "step")}
INTEGER_RANGES = ("mux_layers",)
RECIPE_FIELDS = tuple(f.name for f in fields(Recipe))


@dataclass(frozen=True)
class ParamSpec:
    """One searched dimension: a stepped range (sparsity: floats; mux_layers: integers) or a
    list of choices."""

    name: str
    choices: tuple[Any, ...] = ()
    low: float | None = None
    high: float | None = None
    step: float | None = None

    @property
    def is_range(self) -> bool:
        return self.low is not None

    @property
    def is_integer(self) -> bool:
        return self.name in INTEGER_RANGES

    def values(self) -> list[Any]:
        """All values of the dimension (a range is enumerated on its step)."""
        if not self.is_range:
            return list(self.choices)
        assert self.low is not None and self.high is not None and self.step is not None
        k = int(math.floor((self.high - self.low) / self.step + 1e-9))
        if self.is_integer:
            return [int(self.low) + i * int(self.step) for i in range(k + 1)]
        return [round(self.low + i * self.step, 10) for i in range(k + 1)]

    def _bounds(self) -> tuple[Any, Any, Any]:
        """(low, high, step) of a range, as ints for an integer one."""
        assert self.low is not None and self.high is not None and self.step is not None
        cast = int if self.is_integer else float
        return cast(self.low), cast(self.high), cast(self.step)

    def distribution(self) -> Any:
        import optuna

        if self.is_range and self.is_integer:
            return optuna.distributions.IntDistribution(*self._bounds()[:2], step=self.step)  # type: ignore[arg-type]
        if self.is_range:
            return optuna.distributions.FloatDistribution(self.low, self.high, step=self.step)  # type: ignore[arg-type]
        return optuna.distributions.CategoricalDistribution(list(self.choices))

    def suggest(self, trial: Any) -> Any:
        """This dimension's value in an Optuna trial (define-by-run)."""
        if self.is_range:
            low, high, step = self._bounds()
            if self.is_integer:
                return trial.suggest_int(self.name, low, high, step=step)
            return trial.suggest_float(self.name, low, high, step=step)
        return trial.suggest_categorical(self.name, list(self.choices))

    def to_dict(self) -> dict:
        if self.is_range:
            low, high, step = self._bounds()
            return {"low": low, "high": high, "step": step}
        return {"choices": list(self.choices)}


@dataclass(frozen=True)
class SearchSpace:
    name: str
    task: str
    model: str | None
    recipe: Recipe
    recipe_overrides: dict = field(default_factory=dict)
    params: dict[str, ParamSpec] = field(default_factory=dict)
    source: str = "<dict>"
    data: DataSource | None = None  # the user's data; then `task` is its name
    metric: str | None = None  # overrides the task's primary dev metric
    pos_label: str | None = None  # f1's positive class (None: the task's default)

    # ---- loading ---------------------------------------------------------------------------
    @classmethod
    def from_yaml(cls, path: str | Path) -> SearchSpace:
        p = Path(path).expanduser()
        if not p.is_file():
            raise ConfigError(
                f"search space file {str(path)!r} does not exist; "
                "pass --space with a YAML file such as search_spaces/prumux.yaml"
            )
        try:
            data = yaml.safe_load(p.read_text(encoding="utf-8"))
        except UnicodeDecodeError as e:
            raise ConfigError(
                f"search space {str(p)!r} is not UTF-8 text (byte {e.start}); pass a YAML file "
                "such as search_spaces/prumux.yaml"
            ) from None
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            raise ConfigError(f"search space {str(p)!r} is not valid YAML{where}: {e}") from None
        return cls.from_dict(data, source=str(p))

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "<dict>") -> SearchSpace:
        where = f"search space {source!r}"
        if not isinstance(data, dict):
            raise ConfigError(
                f"{where} must be a mapping with keys {list(TOP_LEVEL_KEYS)}, got {type(data).__name__}"
            )
        unknown = [k for k in data if k not in TOP_LEVEL_KEYS]
        if unknown:
            raise ConfigError(
                f"{where}: unknown key {unknown[0]!r}; allowed keys are {list(TOP_LEVEL_KEYS)}"
            )
        name = data.get("name", "prumux")
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"{where}: 'name' must be a non-empty string, got {name!r}")
        own = _data_source(data, where)
        task = own.task_name if own is not None else data.get("task", "sst2")
        if own is None and (not isinstance(task, str) or task not in TASK_NAMES):
            raise ConfigError(f"{where}: 'task' is {task!r}; allowed values are {list(TASK_NAMES)}")
        from autoprumux.data._source import check_metric, check_pos_label

        metric = data.get("metric")
        try:
            check_metric(metric)
        except ConfigError as e:
            raise ConfigError(f"{where}: 'metric': {e}") from None
        try:  # f1's positive class, only with the metric f1
            pos_label = check_pos_label(data.get("pos_label"), metric)
        except ConfigError as e:
            raise ConfigError(f"{where}: 'pos_label': {e}") from None
        model = data.get("model")
        if model is not None and not isinstance(model, str):
            raise ConfigError(
                f"{where}: 'model' must be null (packaged MiniLM) or a string, got {model!r}"
            )
        overrides = data.get("recipe") or {}
        if not isinstance(overrides, dict):
            raise ConfigError(f"{where}: 'recipe' must be a mapping of Recipe fields")
        for k in overrides:
            if k not in RECIPE_FIELDS and k != "preset":
                raise ConfigError(
                    f"{where}: unknown key 'recipe.{k}'; allowed keys are "
                    f"{['preset', *RECIPE_FIELDS]}"
                )
        try:
            fields_ = {k: v for k, v in overrides.items() if k != "preset"}
            recipe = Recipe.preset(overrides.get("preset", "fast"), **fields_)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{where}: bad 'recipe': {e}") from None
        raw = data.get("params")
        if not isinstance(raw, dict) or not raw:
            raise ConfigError(
                f"{where}: 'params' must be a non-empty mapping with keys from {list(PARAMS)}"
            )
        params: dict[str, ParamSpec] = {}
        for k, spec in raw.items():
            if k not in PARAMS:
                raise ConfigError(
                    f"{where}: unknown key 'params.{k}'; allowed keys are {list(PARAMS)}"
                )
            params[k] = _param(k, spec, where)
        techniques = params["technique"].values() if "technique" in params else ["prumux"]
        for k in params:
            owner = field_technique(k)
            if owner is not None and owner not in techniques:
                raise ConfigError(
                    f"{where}: 'params.{k}' belongs to technique {owner!r}, which the space never "
                    f"samples (technique is {techniques}); add it to 'params.technique.choices' "
                    "or remove the key"
                )
        _check_mux_shape(params, where)
        _check_path_levels(params, recipe, where)
        space = cls(
            name=name.strip(),
            task=task,
            model=model,
            recipe=recipe,
            recipe_overrides=dict(overrides),
            params=params,
            source=source,
            data=own,
            metric=metric,
            pos_label=pos_label,
        )
        try:  # a combination of the values that no configuration takes (an OpenVINO N > 1)
            space.grid()
        except ConfigError as e:
            raise ConfigError(f"{where}: a combination of its values is refused: {e}") from None
        return space

    # ---- use -------------------------------------------------------------------------------
    def with_task(
        self,
        task: str | None,
        *,
        data: DataSource | None = None,
        metric: str | None = None,
        pos_label: str | None = None,
    ) -> SearchSpace:
        """The space with a GLUE `task` or the user's `data` (at most one; either replaces the
        space's task or data), `metric` and `pos_label` (None: the space's) instead."""
        out = self
        if task is not None and data is not None:
            raise ConfigError(f"give a task ({task!r}) or data ({data.location!r}), not both")
        if task is not None and (task != self.task or self.data is not None):
            if task not in TASK_NAMES:
                raise ConfigError(f"task {task!r} is not one of {list(TASK_NAMES)}")
            out = SearchSpace(**{**out.__dict__, "task": task, "data": None})
        if data is not None:
            out = SearchSpace(**{**out.__dict__, "task": data.task_name, "data": data})
        if metric is not None or pos_label is not None:  # checked together
            from autoprumux.data._source import check_metric, check_pos_label

            m = check_metric(metric) if metric is not None else out.metric
            p = check_pos_label(pos_label if pos_label is not None else out.pos_label, m)
            out = SearchSpace(**{**out.__dict__, "metric": m, "pos_label": p})
        return out

    @property
    def glue_task(self) -> str | None:
        """The GLUE task's name, None when the space searches the user's data."""
        return None if self.data is not None else self.task

    def values(self, key: str) -> list[Any]:
        """The values a dimension takes: searched values, or its one default."""
        return self.params[key].values() if key in self.params else [self.defaults()[key]]

    def distributions(self) -> dict[str, Any]:
        return {k: p.distribution() for k, p in self.params.items()}

    def defaults(self) -> dict[str, Any]:
        """Values of dimensions that are not searched: Candidate's defaults, but K students of
        depth d for a students configuration."""
        return {**CANDIDATE_DEFAULTS, **UNSAMPLED_STUDENTS}

    def techniques(self) -> list[str]:
        return [str(t) for t in self.values("technique")]

    def config(self, params: dict[str, Any]) -> Candidate:
        """The configuration of sampled params; the dimensions not searched take their defaults,
        those of the technique not chosen their neutral values, and an N=1 model early mixing's
        (0 per-instance layers, the binding combiner: it combines nothing)."""
        out = {**self.defaults(), **params}
        out.update(NEUTRAL[out["technique"]])
        if int(out["mux"]) == 1:
            out.update(EARLY_MIXING)
        # each value as its field's type (a YAML choice of depth 2.0 is 2)
        return Candidate(**{k: type(CANDIDATE_DEFAULTS[k])(out[k]) for k in CANDIDATE_FIELDS})

    def suggest(self, trial: Any) -> Candidate:
        """Sample a configuration in an Optuna trial: every searched dimension that applies, in
        `PARAMS` order (the technique first, then its own dimensions, how N instances are
        combined only when N > 1, and precision always; define-by-run, so TPE models each
        dimension where it applies)."""
        params: dict[str, Any] = {}
        for k in PARAMS:
            if k in self.params and self._applies(k, params):
                params[k] = self.params[k].suggest(trial)
        return self.config(params)

    def _applies(self, key: str, chosen: dict[str, Any]) -> bool:
        """Whether dimension `key` is sampled given the dimensions `chosen` before it: not one
        of the other technique's, nor how N instances are combined when N = 1."""
        technique = chosen.get("technique", self.defaults()["technique"])
        owner = field_technique(key)
        if owner is not None and owner != technique:
            return False
        return not (key in MUX_SHAPE_FIELDS and int(chosen.get("mux", 1)) == 1)

    def params_of(self, config: Candidate) -> dict[str, Any]:
        """The params `suggest` samples for `config` (an Optuna trial fixed to them samples it),
        after `check_member`."""
        self.check_member(config)
        values = config.to_dict()
        params: dict[str, Any] = {}
        for k in PARAMS:
            if k in self.params and self._applies(k, params):
                params[k] = values[k]
        return params

    def check_member(self, config: Candidate) -> None:
        """Refuse a configuration that is not in the space's grid, naming the dimension whose
        value the space does not take."""
        if config in self.grid():
            return
        values = config.to_dict()
        chosen: dict[str, Any] = {}
        for k in PARAMS:
            allowed = self.values(k)
            if self._applies(k, chosen) and values[k] not in allowed:
                raise ConfigError(
                    f"{config.describe()} is not a configuration of the search space "
                    f"{self.source!r}: its {k} {values[k]!r} is not one of {allowed}; pick a "
                    "value the space searches, or search this one in a new study"
                )
            chosen[k] = values[k]
        raise ConfigError(
            f"{config.describe()} is not a configuration of the search space {self.source!r}; "
            f"pick one of its {len(self.grid())} configurations, or search this one in a new "
            "study"
        )

    def max_mux_layers(self) -> int:
        """The most per-instance layers a configuration of the space runs (0: early mixing)."""
        return max((c.mux_layers for c in self.grid()), default=0)

    def check_model(self, descriptors: Callable[[], dict[str, float]]) -> None:
        """What late multiplexing asks of the model, known once it is resolved (`descriptors`,
        called only for a late space): every mux_layers below its layers, and every N of the
        concat combiner a divisor of its hidden size. Refused before a study starts rather than
        trial by trial."""
        grid = [c for c in self.grid() if c.mux_shape.late]
        if not grid:
            return
        d = descriptors()
        layers, hidden = int(d.get("model_layers", 0)), int(d.get("model_hidden", 0))
        k = max(c.mux_layers for c in grid)
        if layers and k >= layers:
            raise ConfigError(
                f"search space {self.source!r}: 'params.mux_layers' reaches {k}, but the model has "
                f"{layers} encoder layers and at least one must run on the combined inputs; keep "
                f"mux_layers in 0..{layers - 1}"
            )
        bad = sorted({c.mux for c in grid if c.mux_combiner in SPLIT_COMBINERS and hidden % c.mux})
        if hidden and bad:
            raise ConfigError(
                f"search space {self.source!r}: the concat combiners split the hidden size "
                f"({hidden}) into N equal parts, and N={bad[0]} does not divide it; keep "
                f"'params.mux.choices' to divisors of {hidden} or drop {list(SPLIT_COMBINERS)}"
            )

    def grid(self) -> list[Candidate]:
        """Every distinct configuration of the space (each technique's own product)."""
        keys = list(self.params)
        out: dict[Candidate, None] = {}  # insertion-ordered set
        for combo in itertools.product(*(self.params[k].values() for k in keys)):
            out.setdefault(self.config(dict(zip(keys, combo, strict=True))))
        return list(out)

    def to_dict(self) -> dict:
        # a GLUE space's dict keeps its old keys (studies compare it when resumed)
        task = self.data.to_dict() if self.data is not None else {"task": self.task}
        return {
            "name": self.name,
            **task,
            **({"metric": self.metric} if self.metric is not None else {}),
            **({"pos_label": self.pos_label} if self.pos_label is not None else {}),
            "model": self.model,
            "recipe": dict(self.recipe_overrides),
            "params": {k: p.to_dict() for k, p in self.params.items()},
        }

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def fingerprint(self) -> str:
        import hashlib

        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:12]


def _data_source(data: dict, where: str) -> DataSource | None:
    """The `data` of a space and its column keys as a DataSource (None without `data`)."""
    given = {k: data[k] for k in DATA_KEYS if k in data}
    if "data" not in data:
        if given:
            raise ConfigError(f"{where}: {sorted(given)} describe 'data'; add 'data' or drop them")
        return None
    if "task" in data:
        raise ConfigError(
            f"{where}: 'task' ({data['task']!r}) and 'data' ({data['data']!r}) both given; the "
            "data is the task: keep one"
        )
    from autoprumux.data._source import DataSource

    try:
        return DataSource(data["data"], **given)
    except (ConfigError, FileNotFoundError) as e:
        raise type(e)(f"{where}: 'data': {e}") from None


def _param(key: str, spec: Any, where: str) -> ParamSpec:
    path = f"params.{key}"
    if not isinstance(spec, dict):
        raise ConfigError(
            f"{where}: '{path}' must be a mapping: either 'choices: [...]' or 'low/high/step'"
        )
    allowed = (*RANGE_KEYS.get(key, ()), "choices")
    for k in spec:
        if k not in allowed:
            raise ConfigError(
                f"{where}: unknown key '{path}.{k}'; allowed keys are {list(allowed)}"
            )
    if "choices" in spec:
        if len(spec) != 1:
            raise ConfigError(
                f"{where}: '{path}' takes either 'choices' or 'low/high/step', not both"
            )
        choices = spec["choices"]
        if not isinstance(choices, list) or not choices:
            raise ConfigError(f"{where}: '{path}.choices' must be a non-empty list")
        for c in choices:
            _check_value(key, c, f"{path}.choices", where)
        if key in INTEGER_RANGES:  # 2.0 is layer 2
            choices = [int(c) for c in choices]
        if len(set(map(repr, choices))) != len(choices):
            raise ConfigError(f"{where}: '{path}.choices' has duplicates: {choices}")
        return ParamSpec(key, choices=tuple(choices))
    integer = key in INTEGER_RANGES
    if integer:
        spec = {"step": 1, **spec}  # an integer range steps by 1 unless told
    missing = [k for k in ("low", "high", "step") if k not in spec]
    if missing:
        raise ConfigError(f"{where}: '{path}' is missing {missing} (or give 'choices')")
    vals = {}
    for k in ("low", "high", "step"):
        v = spec[k]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ConfigError(f"{where}: '{path}.{k}' must be a number, got {v!r}")
        if integer and not float(v).is_integer():
            raise ConfigError(
                f"{where}: '{path}.{k}' ({v!r}) must be an integer, e.g. {{low: 0, high: 3}}"
            )
        vals[k] = int(v) if integer else float(v)
    _check_value(key, vals["low"], f"{path}.low", where)
    _check_value(key, vals["high"], f"{path}.high", where)
    if vals["high"] < vals["low"]:
        raise ConfigError(
            f"{where}: '{path}.high' ({vals['high']}) is below '{path}.low' ({vals['low']})"
        )
    if vals["step"] <= 0:
        raise ConfigError(f"{where}: '{path}.step' must be > 0, got {vals['step']}")
    span = (vals["high"] - vals["low"]) / vals["step"]
    if abs(span - round(span)) > 1e-6:
        raise ConfigError(
            f"{where}: '{path}': high - low ({vals['high'] - vals['low']:g}) must be a multiple of "
            f"step ({vals['step']:g})"
        )
    return ParamSpec(key, low=vals["low"], high=vals["high"], step=vals["step"])


def _check_value(key: str, v: Any, path: str, where: str) -> None:
    if key == "sparsity":
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v < 1.0:
            raise ConfigError(f"{where}: '{path}' ({v!r}) must be a number in [0, 1)")
    elif key == "mux":
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= MAX_MUX:
            raise ConfigError(f"{where}: '{path}' ({v!r}) must be an integer in [1, {MAX_MUX}]")
    elif key == "mux_variant" and v not in MUX_VARIANTS:
        raise ConfigError(f"{where}: '{path}' ({v!r}) must be one of {list(MUX_VARIANTS)}")
    elif key == "mux_layers":
        if (
            isinstance(v, bool)
            or not isinstance(v, (int, float))
            or not float(v).is_integer()
            or not 0 <= v <= MAX_MUX_LAYERS
        ):
            raise ConfigError(
                f"{where}: '{path}' ({v!r}) must be an integer in [0, {MAX_MUX_LAYERS}] below "
                "the model's number of layers: the encoder layers run per instance before the N "
                "instances are combined, e.g. 'mux_layers: {choices: [0, 1, 2]}' (0 = early "
                "mixing)"
            )
    elif key == "mux_combiner" and v not in MUX_COMBINERS:
        raise ConfigError(
            f"{where}: '{path}' ({v!r}) must be one of {list(MUX_COMBINERS)}, e.g. "
            "'mux_combiner: {choices: [binding, concat]}'"
        )
    elif key == "precision" and v not in PRECISIONS:
        raise ConfigError(f"{where}: '{path}' ({v!r}) must be one of {list(PRECISIONS)}")
    elif key == "technique" and v not in TECHNIQUES:
        raise ConfigError(f"{where}: '{path}' ({v!r}) must be one of {list(TECHNIQUES)}")
    elif key == "students":
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= MAX_STUDENTS:
            raise ConfigError(
                f"{where}: '{path}' ({v!r}) must be an integer in [1, {MAX_STUDENTS}]"
            )
    elif key == "student_depth" and (isinstance(v, bool) or v not in STUDENT_DEPTHS):
        raise ConfigError(f"{where}: '{path}' ({v!r}) must be one of {list(STUDENT_DEPTHS)}")


def _check_path_levels(params: dict[str, ParamSpec], recipe: Recipe, where: str) -> None:
    """With the recipe's recovery "path", a pruned N=1 configuration is the path's snapshot at
    its sparsity: every sparsity the space samples must be 0 or a level of the path."""
    if recipe.recovery != "path" or "sparsity" not in params:
        return
    grid = recipe.path_grid
    off = [s for s in params["sparsity"].values() if s > 0 and level_of(grid, s) is None]
    if off:
        raise ConfigError(
            f"{where}: 'params.sparsity' samples {off}, which are not levels of the recipe's "
            f"pruning path ({grid}: path_step {recipe.path_step:g} up to path_max_sparsity "
            f"{recipe.path_max_sparsity:g}); step the sparsity by a multiple of path_step up "
            "to path_max_sparsity, or set the recipe's recovery to 'separate'"
        )


def _check_mux_shape(params: dict[str, ParamSpec], where: str) -> None:
    """Per-instance layers and the combiner apply to N > 1 only: a space that sets them must
    sample some N > 1 (otherwise every configuration would silently drop them)."""
    shaped = [
        k for k in MUX_SHAPE_FIELDS if k in params and params[k].values() != [EARLY_MIXING[k]]
    ]
    muxes = params["mux"].values() if "mux" in params else [1]
    if shaped and all(int(n) == 1 for n in muxes):
        raise ConfigError(
            f"{where}: 'params.{shaped[0]}' applies to multiplexed models only, but the space "
            f"samples N = 1 only (mux is {muxes}); add N > 1 to 'params.mux.choices', e.g. "
            "[1, 2, 4], or remove the key"
        )
