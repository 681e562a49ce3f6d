"""The Auto-PruMUX search service: search spaces, the Optuna/MLflow study, the meta-model,
recommendations and serving.

The names are imported on first use (PEP 562): reading a YAML space (`SearchSpace`) loads
neither torch nor Optuna, MLflow or LightGBM.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_LAZY = {
    "FEATURES": "autoprumux.search._meta",
    "MetaModel": "autoprumux.search._meta",
    "Recommendation": "autoprumux.search._recommend",
    "Recommender": "autoprumux.search._recommend",
    "build_recommender": "autoprumux.search._recommend",
    "load_trials": "autoprumux.search._recommend",
    "recommend": "autoprumux.search._recommend",
    "ParamSpec": "autoprumux.search._space",
    "SearchSpace": "autoprumux.search._space",
    "Searcher": "autoprumux.search._study",
    "SearchSettings": "autoprumux.search._study",
    "TrialEvaluator": "autoprumux.search._study",
    "default_storage": "autoprumux.search._study",
    "pareto_points": "autoprumux.search._study",
    "check_budget": "autoprumux.config",
}

if TYPE_CHECKING:
    from autoprumux.config import check_budget
    from autoprumux.search._meta import FEATURES, MetaModel
    from autoprumux.search._recommend import (
        Recommendation,
        Recommender,
        build_recommender,
        load_trials,
        recommend,
    )
    from autoprumux.search._space import ParamSpec, SearchSpace
    from autoprumux.search._study import (
        Searcher,
        SearchSettings,
        TrialEvaluator,
        default_storage,
        pareto_points,
    )


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'autoprumux.search' has no attribute {name!r}")


__all__ = [
    "FEATURES",
    "MetaModel",
    "ParamSpec",
    "Recommendation",
    "Recommender",
    "SearchSettings",
    "SearchSpace",
    "Searcher",
    "TrialEvaluator",
    "build_recommender",
    "check_budget",
    "default_storage",
    "load_trials",
    "pareto_points",
    "recommend",
]
