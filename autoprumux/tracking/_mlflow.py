"""MLflow runs for searches: one parent run per study, one nested run per trial.

Everything goes through an explicit `MlflowClient`, so several studies or workers in one process
never share hidden "active run" state. Where the stores are: `_stores`.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autoprumux.errors import ConfigError
from autoprumux.tracking._stores import artifact_root, make_store_dir

if TYPE_CHECKING:
    from autoprumux.evaluation import StageRun

EXPERIMENT_PREFIX = "autoprumux"
# what one log_batch may hold (MLflow's limits)
BATCH_METRICS, BATCH_PARAMS, BATCH_ENTITIES = 1000, 100, 1000
MAX_VIEW_RUNS = 5000  # trial runs read for the trials view's columns
# MLflow 3's UI opens an experiment without this tag on its GenAI overview ("Traces 0"); a
# model-training experiment opens on its runs, where the trials are
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
PARETO_FIGURE = "pareto_front.png"  # the study run's plot of its trials' loss and speedup


def client(tracking_uri: str) -> Any:
    from mlflow.tracking import MlflowClient

    make_store_dir(tracking_uri)
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def experiment_id(cl: Any, name: str, tracking_uri: str) -> str:
    """Get or create the experiment `name` (race-safe across workers)."""
    from mlflow.exceptions import MlflowException

    exp = cl.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            raise ConfigError(
                f"MLflow experiment {name!r} is deleted in {tracking_uri}; restore it "
                "(mlflow experiments restore) or pass another --study-name"
            )
        if exp.tags.get("mlflow.experimentKind") is None:  # made by an older version
            for key, value in EXPERIMENT_KIND.items():
                cl.set_experiment_tag(exp.experiment_id, key, value)
        return str(exp.experiment_id)
    try:
        return str(
            cl.create_experiment(
                name, artifact_location=artifact_root(tracking_uri), tags=EXPERIMENT_KIND
            )
        )
    except MlflowException:
        exp = cl.get_experiment_by_name(name)  # another worker created it first
        if exp is None:
            raise
        return str(exp.experiment_id)


def log_run_data(
    cl: Any,
    run_id: str,
    *,
    params: dict[str, Any] | None = None,
    metrics: dict[str, float] | None = None,
    tags: dict[str, Any] | None = None,
) -> None:
    from mlflow.entities import Metric, Param, RunTag

    now = int(time.time() * 1000)
    cl.log_batch(
        run_id,
        metrics=[Metric(k, float(v), now, 0) for k, v in (metrics or {}).items() if v is not None],
        params=[Param(k, str(v)) for k, v in (params or {}).items()],
        tags=[RunTag(k, str(v)) for k, v in (tags or {}).items()],
        synchronous=True,
    )


def log_learning_curve(cl: Any, run_id: str, stopping: dict[str, Any], prefix: str) -> None:
    """A training run's curve (`PlateauStop.summary`) as step-indexed metrics
    `{prefix}_train_loss` and `{prefix}_validation_metric`, and whether it converged."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    points = stopping.get("curve", [])
    metrics = [
        Metric(f"{prefix}_{name}", float(p[key]), now, int(p["step"]))
        for p in points
        for name, key in (("train_loss", "train_loss"), ("validation_metric", "metric"))
    ]
    cl.log_batch(run_id, metrics=metrics, synchronous=True)
    log_run_data(
        cl,
        run_id,
        params={
            f"{prefix}_converged": bool(stopping.get("converged")),
            f"{prefix}_steps": stopping.get("steps"),
            f"{prefix}_best_step": stopping.get("best_step"),
        },
    )


def log_stage_training(cl: Any, run_id: str, stages: Sequence[StageRun], metric: str) -> None:
    """How a candidate's training stages stopped (`evaluation.StageRun`), on its run: params
    ``stage.<key>.stopped`` (converged, cap, unvalidated or unrecorded), ``.converged``,
    ``.steps`` and ``.cap``; metrics ``stage.<key>.best_validation_metric`` and the curve
    (``stage.<key>.validation_metric`` and ``.train_loss`` by step); the artefact
    ``stage_training.json`` (each stage without its curve, and its line). One batch where the
    limits allow (a trial's tracking stays a few calls)."""
    from mlflow.entities import Metric, Param

    now = int(time.time() * 1000)
    briefs = [st.brief(metric) for st in stages]
    params: list[Any] = []
    metrics: list[Any] = []
    for st, b in zip(stages, briefs, strict=True):
        p = f"stage.{st.key}"
        params += [Param(f"{p}.{k}", str(b[k])) for k in ("stopped", "converged", "steps", "cap")]
        if b["best_metric"] is not None:
            metrics.append(Metric(f"{p}.best_validation_metric", float(b["best_metric"]), now, 0))
        metrics += [
            Metric(f"{p}.{name}", float(pt[key]), now, int(pt["step"]))
            for pt in (st.stopping or {}).get("curve", [])
            for name, key in (("validation_metric", "metric"), ("train_loss", "train_loss"))
            if math.isfinite(float(pt[key]))  # an L2L stage records no training loss
        ]
    while params or metrics:
        ps, params = params[:BATCH_PARAMS], params[BATCH_PARAMS:]
        room = min(BATCH_METRICS, BATCH_ENTITIES - len(ps))
        ms, metrics = metrics[:room], metrics[room:]
        cl.log_batch(run_id, metrics=ms, params=ps, synchronous=True)
    log_json(cl, run_id, briefs, "stage_training.json")


def log_text(cl: Any, run_id: str, text: str, name: str) -> None:
    cl.log_text(run_id, text, name)


def log_json(cl: Any, run_id: str, obj: Any, name: str) -> None:
    cl.log_text(run_id, json.dumps(obj, indent=2, sort_keys=True, default=str), name)


def log_figure_png(cl: Any, run_id: str, fig: Any, name: str) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / name
        fig.savefig(path, dpi=110, bbox_inches="tight")
        cl.log_artifact(run_id, str(path))


# MLflow 3's runs page keeps its table (columns, order) per browser; an experiment tag
# `mlflow.sharedViewState.<key>` holds a saved view that the page opens with
# `?viewStateShareKey=<key>` (and lists under "Views"): {name, createdAt, updatedAt, state},
# the state a JSON string of the page's search facets and table settings.
SAVED_VIEW_TAG = "mlflow.sharedViewState."
TRIALS_VIEW = "autoprumux-trials"
TRIALS_VIEW_NAME = "autoprumux: trials"
# the trials' columns: these metrics, then these params where logged; the params in
# VARYING_PARAMS only where the study's trials differ in them
VIEW_METRICS = ("validation_loss", "accuracy_loss", "speedup")
VIEW_PARAMS = ("technique", "sparsity", "mux", "mux_layers", "precision", "students")
CORE_PARAMS = ("sparsity", "mux", "precision")
# ordered by a metric, MLflow lists the runs flat (the trials are not folded under the
# study's run, which has no speedup and comes last)
VIEW_ORDER = "metrics.`speedup`"


def column(kind: str, key: str) -> str:
    """A runs-table column as MLflow's UI names it: ``metrics.`speedup```."""
    return f"{kind}.`{key}`"


def trials_view(cl: Any, experiment_id: str) -> dict[str, Any] | None:
    """The state of the study's trials view (see SAVED_VIEW_TAG), its columns taken from the
    keys the experiment's trial runs logged; None when it holds no trial run."""
    runs = cl.search_runs(
        [experiment_id], "tags.`autoprumux.role` = 'trial'", max_results=MAX_VIEW_RUNS
    )
    if not runs:
        return None
    metrics = {k for r in runs for k in r.data.metrics}
    values: dict[str, set[str]] = {}
    for r in runs:
        for k, v in r.data.params.items():
            values.setdefault(k, set()).add(v)
    params = [k for k in VIEW_PARAMS if k in values and (k in CORE_PARAMS or len(values[k]) > 1)]
    columns = [column("metrics", k) for k in VIEW_METRICS if k in metrics]
    columns += [column("params", k) for k in params]
    losses = [k for k in VIEW_METRICS[:2] if k in metrics]  # validation (chooses), dev
    return {
        "searchFilter": "",
        "orderByKey": VIEW_ORDER,
        "orderByAsc": False,
        "selectedColumns": columns,
        "columnOrder": columns,
        # wide enough for a metric's full value (MLflow prints them unrounded)
        "columnWidths": {c: 150 if c.startswith("metrics.") else 100 for c in columns},
        # the chart view: every run plotted, speedup against each loss first (MLflow adds
        # its own charts of the other metrics below)
        "runsHiddenMode": "SHOW_ALL",
        "compareRunSections": [
            {
                "uuid": CHART_SECTION,
                "name": "speedup against accuracy loss",
                "display": True,
                "isReordered": False,
                "deleted": False,
                "isGenerated": False,
            }
        ],
        "compareRunCharts": [scatter(loss, "speedup") for loss in losses if "speedup" in metrics],
    }


CHART_SECTION = "autoprumux-trials"


def scatter(x: str, y: str) -> dict[str, Any]:
    """A scatter chart of the runs' metrics y against x, as MLflow's UI keeps one."""
    return {
        "uuid": f"autoprumux-{y}-{x}",
        "type": "SCATTER",
        "metricSectionId": CHART_SECTION,
        "displayName": f"{y} against {x}",
        "xaxis": {"key": x, "type": "METRIC"},
        "yaxis": {"key": y, "type": "METRIC"},
        "runsCountToCompare": MAX_VIEW_RUNS,
        "deleted": False,
        "isGenerated": False,
    }


def save_trials_view(cl: Any, experiment_id: str) -> str | None:
    """Store the trials view on the experiment (rewritten only when its state changed); its
    key for `runs_page`, or None when the experiment holds no trial run."""
    state = trials_view(cl, experiment_id)
    if state is None:
        return None
    text = json.dumps(state, sort_keys=True)
    tag = SAVED_VIEW_TAG + TRIALS_VIEW
    old = cl.get_experiment(experiment_id).tags.get(tag)
    try:
        before = json.loads(old) if old else {}
    except ValueError:
        before = {}
    if before.get("state") != text or before.get("name") != TRIALS_VIEW_NAME:
        now = int(time.time() * 1000)
        created = before.get("createdAt")
        view = {
            "name": TRIALS_VIEW_NAME,
            "createdAt": created if isinstance(created, int) else now,
            "updatedAt": now,
            "state": text,
        }
        cl.set_experiment_tag(experiment_id, tag, json.dumps(view))
    return TRIALS_VIEW


def runs_page(base_url: str, experiment_id: str, view: str | None = None) -> str:
    """The dashboard page of an experiment's runs, opened on the saved `view` if given. MLflow 3
    opens every experiment in its GenAI view until the user switches to "Model training"
    (kept in the browser); the URL's `workflowType` switches it, whatever the experiment's
    kind tag."""
    page = f"{base_url}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"
    return page + (f"&viewStateShareKey={view}" if view else "")


def artifact_page(base_url: str, experiment_id: str, run_id: str, path: str) -> str:
    """The dashboard page of a run's artefact (its Artifacts tab, the file shown), in the
    model-training view (see `runs_page`)."""
    page = f"{base_url}/#/experiments/{experiment_id}/runs/{run_id}/artifacts/{path}"
    return page + "?workflowType=machine_learning"


def newest_study_run(cl: Any) -> Any | None:
    """The parent run of the most recently started study in the store (None: none)."""
    runs = cl.search_runs(
        [e.experiment_id for e in cl.search_experiments()],
        "tags.`autoprumux.role` = 'study'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0] if runs else None


def newest_study_experiment(cl: Any) -> str | None:
    """The id of the experiment of the most recently started study in the store (None: none)."""
    run = newest_study_run(cl)
    return None if run is None else str(run.info.experiment_id)
