"""Tracking: where the local stores live, which URIs are accepted, the Optuna study storage and
the MLflow runs.

Imports neither torch, Optuna nor MLflow until a storage is opened or a run is logged.
"""

from autoprumux.tracking._mlflow import (
    EXPERIMENT_PREFIX,
    PARETO_FIGURE,
    TRIALS_VIEW,
    artifact_page,
    client,
    experiment_id,
    log_figure_png,
    log_json,
    log_learning_curve,
    log_run_data,
    log_stage_training,
    log_text,
    newest_study_experiment,
    newest_study_run,
    runs_page,
    save_trials_view,
    trials_view,
)
from autoprumux.tracking._optuna import (
    check_study_name,
    load_study_attrs,
    make_storage,
    redact_url,
    trial_count,
)
from autoprumux.tracking._stores import (
    artifact_root,
    check_reachable,
    check_tracking_uri,
    default_storage,
    default_tracking_uri,
    make_store_dir,
    missing_sqlite_file,
    resolve_tracking_uri,
)
from autoprumux.tracking._trial_run import TrialRun, failure_reason

__all__ = [
    "TrialRun",
    "failure_reason",
    "PARETO_FIGURE",
    "TRIALS_VIEW",
    "artifact_page",
    "newest_study_experiment",
    "newest_study_run",
    "runs_page",
    "save_trials_view",
    "trials_view",
    "check_study_name",
    "load_study_attrs",
    "make_storage",
    "redact_url",
    "trial_count",
    "EXPERIMENT_PREFIX",
    "artifact_root",
    "check_reachable",
    "check_tracking_uri",
    "client",
    "default_storage",
    "default_tracking_uri",
    "experiment_id",
    "log_figure_png",
    "log_json",
    "log_learning_curve",
    "log_run_data",
    "log_stage_training",
    "log_text",
    "make_store_dir",
    "missing_sqlite_file",
    "resolve_tracking_uri",
]
