"""The meta-model and the recommender: what the finished trials say.

`MetaModel` predicts a configuration's accuracy loss and speedup from its features (`FEATURES`:
the configuration and its study's context); `Recommender` answers "the fastest configuration
within my budget" from the measured trials of every study in a storage, with the meta-model's
suggestion of what to measure next (`autoprumux.serving` stores it as an MLflow model and serves
it). It reads trials as data from the Optuna storage and never imports the search.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from autoprumux._lazy import lazy_exports

__getattr__ = lazy_exports(
    __name__,
    {
        "FEATURES": "autoprumux.meta._model",
        "MetaModel": "autoprumux.meta._model",
        "Recommendation": "autoprumux.meta._recommend",
        "Recommender": "autoprumux.meta._recommend",
        "build_recommender": "autoprumux.meta._recommend",
        "context_of": "autoprumux.meta._recommend",
        "load_trials": "autoprumux.meta._recommend",
        "recommend": "autoprumux.meta._recommend",
    },
)

if TYPE_CHECKING:
    from autoprumux.meta._model import FEATURES, MetaModel
    from autoprumux.meta._recommend import (
        Recommendation,
        Recommender,
        build_recommender,
        context_of,
        load_trials,
        recommend,
    )

__all__ = [
    "FEATURES",
    "context_of",
    "MetaModel",
    "Recommendation",
    "Recommender",
    "build_recommender",
    "load_trials",
    "recommend",
]
