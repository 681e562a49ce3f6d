"""Configuration: what a user chooses, each value checked once where it enters.

Torch-free on purpose: the CLI, the search space and the meta-model read these without loading
the models. `Recipe` is the training recipe (steps and rates; part of every cache key;
`_recipe.py`, each field's rule, group and help beside it); `Candidate` one configuration the
search can evaluate (technique; sparsity, N and mux shape for PruMUX; K and depth for Academus
students; `_candidate.py`); `check_budget` the accuracy-loss budget and `ThroughputConfig` how a
configuration is timed (`_measure.py`); the pruning path's grid (`_path.py`); the names and limits they share in `_names.py`.
Everything after this package trusts them: dicts appear only at the edges (YAML, MLflow
params, JSON).
"""

from __future__ import annotations

from autoprumux.config._candidate import (
    BASELINE,
    CANDIDATE_DEFAULTS,
    CANDIDATE_FIELDS,
    MUX_SHAPE_FIELDS,
    SAMPLING_ORDER,
    TECHNIQUE_FIELDS,
    Candidate,
    MuxShape,
    field_technique,
    validate_candidate,
    validate_mux_layers,
)
from autoprumux.config._measure import (
    Budget,
    ThroughputConfig,
    check_budget,
    check_margin_se,
    check_precision,
)
from autoprumux.config._names import (
    BATCHINGS,
    DEVICE_PRECISIONS,
    GRAPH_INPUTS,
    GRAPH_OUTPUT,
    L2L_CLIP_MODES,
    LOGIT_LOSSES,
    MAX_MUX,
    MAX_MUX_LAYERS,
    MAX_STUDENTS,
    MUX_COMBINERS,
    MUX_VARIANTS,
    OPENVINO_INSTALL,
    OPENVINO_PACKAGES,
    OPENVINO_PRECISIONS,
    PATH_SCHEDULES,
    PLAN_COSTS,
    POOLINGS,
    PRECISION_RANK,
    PRECISIONS,
    RECOVERY_SCHEDULES,
    RECOVERY_SOURCES,
    SAMPLERS,
    SPLIT_COMBINERS,
    STASH_PLACES,
    STUDENT_DEPTHS,
    STUDENT_INITS,
    TASK_NAMES,
    TECHNIQUES,
    TRAIN_AUTOCASTS,
    TRAINERS,
    openvino_cpu_settings,
    runtime_of,
    validate_trainer,
)
from autoprumux.config._path import PATH_LEVEL_TOLERANCE, level_of, path_levels
from autoprumux.config._recipe import (
    RECIPE_GROUPS,
    RECIPE_PRESETS,
    Recipe,
)

__all__ = [
    "Budget",
    "BASELINE",
    "BATCHINGS",
    "CANDIDATE_DEFAULTS",
    "CANDIDATE_FIELDS",
    "Candidate",
    "DEVICE_PRECISIONS",
    "L2L_CLIP_MODES",
    "LOGIT_LOSSES",
    "MAX_MUX",
    "MAX_MUX_LAYERS",
    "MAX_STUDENTS",
    "MUX_COMBINERS",
    "MUX_SHAPE_FIELDS",
    "MUX_VARIANTS",
    "MuxShape",
    "PATH_LEVEL_TOLERANCE",
    "PATH_SCHEDULES",
    "PLAN_COSTS",
    "POOLINGS",
    "PRECISIONS",
    "GRAPH_INPUTS",
    "GRAPH_OUTPUT",
    "OPENVINO_INSTALL",
    "OPENVINO_PACKAGES",
    "OPENVINO_PRECISIONS",
    "PRECISION_RANK",
    "RECIPE_GROUPS",
    "RECIPE_PRESETS",
    "RECOVERY_SCHEDULES",
    "RECOVERY_SOURCES",
    "Recipe",
    "SAMPLERS",
    "SAMPLING_ORDER",
    "SPLIT_COMBINERS",
    "STASH_PLACES",
    "STUDENT_DEPTHS",
    "STUDENT_INITS",
    "TASK_NAMES",
    "TECHNIQUES",
    "TECHNIQUE_FIELDS",
    "TRAINERS",
    "TRAIN_AUTOCASTS",
    "ThroughputConfig",
    "check_budget",
    "check_margin_se",
    "check_precision",
    "level_of",
    "path_levels",
    "field_technique",
    "validate_candidate",
    "validate_mux_layers",
    "openvino_cpu_settings",
    "runtime_of",
    "validate_trainer",
]
