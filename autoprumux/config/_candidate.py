"""One configuration the search can evaluate (`Candidate`; technique, sparsity, N and the mux
shape for PruMUX, K and depth for Academus students, precision), validated and normalised once
where it is made, and the lists of its fields the rest of the package derives from it."""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from autoprumux.config._names import (
    MAX_MUX,
    MAX_MUX_LAYERS,
    MAX_STUDENTS,
    MUX_COMBINERS,
    MUX_VARIANTS,
    OPENVINO_PRECISIONS,
    PRECISION_RANK,
    PRECISIONS,
    STUDENT_DEPTHS,
    TECHNIQUES,
    runtime_of,
)
from autoprumux.errors import ConfigError


def validate_candidate(sparsity: object, n: object) -> tuple[float, int]:
    try:
        s = float(sparsity)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ConfigError(
            f"sparsity {sparsity!r} is not a number; use a fraction in [0, 1), e.g. 0.7"
        ) from None
    if not math.isfinite(s) or not 0.0 <= s < 1.0:
        raise ConfigError(
            f"sparsity ({sparsity!r}) must be in [0, 1); e.g. --sparsity 0.7 removes 70% of the encoder"
        )
    bad_n = ConfigError(f"mux width N ({n!r}) must be a positive integer (1 = no multiplexing)")
    if isinstance(n, bool):
        raise bad_n
    if not isinstance(n, int):
        try:
            fn = float(n)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise bad_n from None
        if not fn.is_integer():
            raise bad_n
        n = int(fn)
    if n < 1:
        raise bad_n
    if n > MAX_MUX:
        raise ConfigError(
            f"mux width N ({n}) must be at most {MAX_MUX}; DataMUX reports usable accuracy up to N=40"
        )
    return s, n


def validate_mux_layers(layers: object) -> int:
    """mux_layers: an integer in [0, MAX_MUX_LAYERS] (the model's own depth is checked where
    the model is known)."""
    if isinstance(layers, bool) or not isinstance(layers, numbers.Integral):
        try:
            f = float(layers)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            f = math.nan
        if isinstance(layers, bool) or not f.is_integer():
            raise ConfigError(
                f"mux_layers ({layers!r}) must be an integer >= 0: the encoder layers run per "
                "instance before the N instances are combined (0 = mix the embeddings)"
            )
        layers = int(f)
    if not 0 <= int(layers) <= MAX_MUX_LAYERS:
        raise ConfigError(
            f"mux_layers ({layers!r}) must be in [0, {MAX_MUX_LAYERS}] and below the model's "
            "number of layers, e.g. 2"
        )
    return int(layers)


@dataclass(frozen=True)
class MuxShape:
    """How a model multiplexes: N instances per pass, `layers` of its encoder run per instance
    before the `combiner` combines them (0 layers + "binding" is early mixing, DataMUX's)."""

    n: int = 1
    layers: int = 0
    combiner: str = "binding"

    @property
    def late(self) -> bool:
        """Built from the fine-tuned baseline (per-instance layers or a learned combiner) rather
        than from the token-retrieval warm-up."""
        return self.n > 1 and (self.layers > 0 or self.combiner != "binding")

    @property
    def prefix_positions(self) -> int:
        """The N of the index prefix that takes position embeddings (none when the prefix joins
        after per-instance layers): what `BaseModel.check_lengths` adds to a sequence."""
        return self.n if self.layers == 0 else 1

    @property
    def suffix(self) -> str:
        """What `Candidate.describe` adds for a late model ("" for early mixing)."""
        return f" k={self.layers} {self.combiner}" if self.late else ""


# ---- one configuration -----------------------------------------------------------------------
@dataclass(frozen=True)
class Candidate:
    """One configuration of the search: a PruMUX model (sparsity, N, mux variant; students and
    student_depth 0) or K Academus students of a depth (sparsity 0, N=1). Validated and
    normalised once here (sparsity rounded to 6 places, so equal configurations are equal and
    hash alike); frozen, so it is a dictionary key. `Candidate()` is the baseline."""

    # the only list of a configuration's fields: the search space's dimensions, the
    # recommender's columns and every stored record derive from it (see `CANDIDATE_FIELDS`).
    # metadata "technique": the one technique the field applies to (the other's
    # configurations hold its default); "mux_shape": how N > 1 instances are combined (an N=1
    # configuration holds its default)
    technique: str = "prumux"
    sparsity: float = field(default=0.0, metadata={"technique": "prumux"})
    mux: int = field(default=1, metadata={"technique": "prumux"})
    mux_variant: str = field(default="gaussian", metadata={"technique": "prumux"})
    students: int = field(default=0, metadata={"technique": "students"})
    student_depth: int = field(default=0, metadata={"technique": "students"})
    precision: str = "fp32"
    # late multiplexing: the first mux_layers encoder layers run per instance before the
    # mux_combiner combines the N instances (see `MuxShape`)
    mux_layers: int = field(default=0, metadata={"technique": "prumux", "mux_shape": True})
    mux_combiner: str = field(
        default="binding", metadata={"technique": "prumux", "mux_shape": True}
    )

    def __post_init__(self) -> None:
        if self.technique not in TECHNIQUES:
            raise ConfigError(f"technique ({self.technique!r}) must be one of {list(TECHNIQUES)}")
        s, n = validate_candidate(self.sparsity, self.mux)
        object.__setattr__(self, "sparsity", round(s, 6))
        object.__setattr__(self, "mux", n)
        if self.mux_variant not in MUX_VARIANTS:
            raise ConfigError(
                f"mux variant ({self.mux_variant!r}) must be one of {list(MUX_VARIANTS)}"
            )
        object.__setattr__(self, "mux_layers", validate_mux_layers(self.mux_layers))
        if self.mux_combiner not in MUX_COMBINERS:
            raise ConfigError(
                f"mux combiner ({self.mux_combiner!r}) must be one of {list(MUX_COMBINERS)}"
            )
        if n == 1 and (self.mux_layers or self.mux_combiner != "binding"):
            raise ConfigError(
                f"mux_layers ({self.mux_layers}) and mux_combiner ({self.mux_combiner!r}) apply "
                "to multiplexed models only; use N > 1, or mux_layers 0 and mux_combiner 'binding'"
            )
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision ({self.precision!r}) must be one of {list(PRECISIONS)}")
        if n > 1 and self.precision in OPENVINO_PRECISIONS:
            raise ConfigError(
                f"precision {self.precision!r} runs the model's ONNX graph in OpenVINO, which "
                f"takes N=1 models and students; an N={n} model pads its batch to a multiple of "
                "N inside its forward pass, which does not export. Use precision 'fp32' or "
                "'int8' for N > 1"
            )
        for name in ("students", "student_depth"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, numbers.Integral):
                raise ConfigError(f"{name} ({v!r}) must be an integer")
            object.__setattr__(self, name, int(v))
        if self.technique == "students":
            if not 1 <= self.students <= MAX_STUDENTS:
                raise ConfigError(
                    f"students ({self.students!r}) must be an integer in [1, {MAX_STUDENTS}]"
                )
            if self.student_depth not in STUDENT_DEPTHS:
                raise ConfigError(
                    f"student_depth ({self.student_depth!r}) must be one of {list(STUDENT_DEPTHS)}"
                )
            if self.sparsity != 0.0 or self.mux != 1:
                raise ConfigError(
                    f"a students configuration has sparsity 0 and N=1, got sparsity "
                    f"{self.sparsity:g} and N={self.mux}"
                )
        elif self.students or self.student_depth:
            raise ConfigError(
                f"a PruMUX configuration has no students, got students={self.students} and "
                f"student_depth={self.student_depth}"
            )

    @classmethod
    def from_dict(cls, d: Any) -> Candidate:
        """From a stored record (YAML, JSON, an Optuna attribute); a record written before
        students existed is a PruMUX one."""
        if not isinstance(d, dict):
            raise ConfigError(f"a configuration must be a mapping, got {type(d).__name__}")
        unknown = sorted(set(d) - {f.name for f in fields(cls)})
        if unknown:
            raise ConfigError(f"unknown configuration key {unknown[0]!r}")
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def is_baseline(self) -> bool:
        return (
            self.technique == "prumux"
            and self.sparsity == 0.0
            and self.mux == 1
            and self.precision == "fp32"
        )

    @property
    def mux_shape(self) -> MuxShape:
        return MuxShape(self.mux, self.mux_layers, self.mux_combiner)

    def describe(self) -> str:
        if self.technique == "students":
            text = f"students K={self.students} d={self.student_depth}"
        else:
            text = f"s={self.sparsity:g} N={self.mux}{self.mux_shape.suffix}"
        return text if self.precision == "fp32" else f"{text} {self.precision}"

    # Within one family, a more aggressive configuration (higher sparsity and N; fewer or
    # shallower students) loses at least as much accuracy and runs at least as fast: the
    # guided sampler's dominance, the recommender's suggestions and the meta-model's monotone
    # constraints all rest on this order.
    @property
    def family(self) -> tuple[str, ...]:
        """Configurations comparable by aggressiveness share a family."""
        runtime = runtime_of(self.precision)
        if self.technique == "students":
            return ("students", runtime)
        return ("prumux", self.mux_variant, self.mux_combiner, runtime)

    @property
    def aggressiveness(self) -> tuple[float, ...]:
        """Coordinates that never lower the loss or the speedup as they rise (within a family).
        More per-instance layers multiplex less; N=1 runs every layer per instance, so its
        coordinate is below any multiplexed model's."""
        rank = float(PRECISION_RANK[self.precision])
        if self.technique == "students":
            return (-float(self.students), -float(self.student_depth), rank)
        per_instance = -float(self.mux_layers) if self.mux > 1 else -float(MAX_MUX_LAYERS)
        return (self.sparsity, math.log2(self.mux), per_instance, rank)

    @property
    def sparsity_kind(self) -> Candidate:
        """What configurations differing only in sparsity share (this one at sparsity 0): an
        answer pools their validation losses along sparsity (`autoprumux._selection`)."""
        return replace(self, sparsity=0.0)

    def below(self, other: Candidate) -> bool:
        """Same family and no more aggressive than `other` (so it loses no more than `other`)."""
        return self.family == other.family and all(
            x <= y + 1e-9 for x, y in zip(self.aggressiveness, other.aggressiveness, strict=True)
        )


BASELINE = Candidate()

# ---- Candidate's fields, as the rest of the package lists them ----------------------------------
# in field order (what `Candidate.to_dict` writes: YAML, JSON, MLflow params)
CANDIDATE_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Candidate))
# each field's default: a configuration's value for a field that does not apply to it
CANDIDATE_DEFAULTS: dict[str, Any] = {f.name: f.default for f in fields(Candidate)}
# the fields only one technique uses (field order)
TECHNIQUE_FIELDS: dict[str, tuple[str, ...]] = {
    t: tuple(f.name for f in fields(Candidate) if f.metadata.get("technique") == t)
    for t in TECHNIQUES
}
# how a multiplexed model combines its instances: applies to N > 1 only
MUX_SHAPE_FIELDS: tuple[str, ...] = tuple(
    f.name for f in fields(Candidate) if f.metadata.get("mux_shape")
)
# every field in the order a search samples them: the technique first (it decides which others
# apply), then each technique's own fields (`TECHNIQUES` order), then those of every technique;
# the recommender's output columns keep this order too
SAMPLING_ORDER: tuple[str, ...] = (
    "technique",
    *(name for t in TECHNIQUES for name in TECHNIQUE_FIELDS[t]),
    *(f.name for f in fields(Candidate) if f.name != "technique" and "technique" not in f.metadata),
)


def field_technique(name: str) -> str | None:
    """The technique Candidate field `name` belongs to (None: it applies to every one)."""
    return next((t for t, names in TECHNIQUE_FIELDS.items() if name in names), None)
