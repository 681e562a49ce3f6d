"""The search: spaces, the Optuna study loop with MLflow runs, the budget-guided sampler, and the
Pareto report.

Names are imported on first use: reading a YAML space (`SearchSpace`) loads neither torch nor
Optuna, MLflow or LightGBM.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from autoprumux._lazy import lazy_exports

__getattr__ = lazy_exports(
    __name__,
    {
        "ParamSpec": "autoprumux.search._space",
        "SearchSpace": "autoprumux.search._space",
        "Searcher": "autoprumux.search._study",
        "SearchSettings": "autoprumux.search._settings",
        "TrialEvaluator": "autoprumux.search._study",
        "pareto_points": "autoprumux.search._report",
    },
)

if TYPE_CHECKING:
    from autoprumux.search._report import pareto_points
    from autoprumux.search._settings import SearchSettings
    from autoprumux.search._space import ParamSpec, SearchSpace
    from autoprumux.search._study import Searcher, TrialEvaluator

__all__ = [
    "ParamSpec",
    "SearchSettings",
    "SearchSpace",
    "Searcher",
    "TrialEvaluator",
    "pareto_points",
]
