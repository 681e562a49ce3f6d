"""The Auto-PruMUX search service: search spaces, the Optuna/MLflow study, the meta-model,
recommendations and serving."""

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
    check_budget,
    default_storage,
    pareto_points,
)

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
