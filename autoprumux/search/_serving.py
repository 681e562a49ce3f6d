"""The recommender as an MLflow pyfunc model: logged, registered and served.

Input: a table with a `budget` column (accuracy-loss points) and optional `task`, `model`,
`device` columns. Output: one row per budget with the answer (`source` "measured" or
"baseline", its measured `accuracy_loss` and `speedup`), the meta-model's predictions for it,
and the suggested configuration to measure next (`suggested_*`; -1 / NaN when there is none).
A bad payload raises an MlflowException with INVALID_PARAMETER_VALUE, which the scoring server
answers with HTTP 400.
"""

from __future__ import annotations

import contextlib
import math
import os
import pickle
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mlflow.pyfunc import PythonModel

from autoprumux.errors import ConfigError
from autoprumux.search import _tracking as tracking

REGISTERED_NAME = "autoprumux-recommender"
OUTPUT_COLUMNS = (
    "budget",
    "task",
    "model",
    "device",
    "technique",
    "sparsity",
    "mux",
    "mux_variant",
    "students",
    "student_depth",
    "source",
    "accuracy_loss",
    "speedup",
    "predicted_accuracy_loss",
    "accuracy_loss_low",
    "accuracy_loss_high",
    "predicted_speedup",
    "speedup_low",
    "speedup_high",
    "measured_trial",
    "measured_accuracy_loss",
    "measured_speedup",
    "suggested_sparsity",
    "suggested_mux",
    "suggested_technique",
    "suggested_predicted_accuracy_loss",
    "suggested_accuracy_loss_high",
    "suggested_predicted_speedup",
)


def _bad(msg: str) -> Exception:
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

    return MlflowException(msg, error_code=INVALID_PARAMETER_VALUE)


class RecommenderModel(PythonModel):
    """pyfunc wrapper around a pickled `Recommender`."""

    def load_context(self, context: Any) -> None:
        with open(context.artifacts["recommender"], "rb") as f:
            self.recommender = pickle.load(f)

    # no type hints here: MLflow reads them as a (list-based) input schema; the signature logged
    # with the model is the schema
    def predict(self, context, model_input, params=None):  # noqa: ANN001, ANN201
        import pandas as pd

        rec = self.recommender
        df = model_input
        if isinstance(df, dict):
            df = pd.DataFrame(df)
        if not isinstance(df, pd.DataFrame):
            raise _bad(f"expected a table with a 'budget' column, got {type(model_input).__name__}")
        if "budget" not in df.columns:
            raise _bad(
                f"input has no 'budget' column (columns: {list(df.columns)}); "
                'send e.g. {"dataframe_records": [{"budget": 2.0}]}'
            )
        rows = []
        for i, r in enumerate(df.to_dict(orient="records")):
            b = r.get("budget")
            try:
                rec_ = rec.recommend(
                    b,
                    _opt_str(r.get("task")),
                    model=_opt_str(r.get("model")),
                    device=_opt_str(r.get("device")),
                )
            except ConfigError as e:
                raise _bad(f"row {i}: {e}") from None
            m = rec_.measured
            rows.append(
                {
                    "budget": rec_.budget,
                    "task": rec_.task,
                    "model": rec_.model,
                    "device": rec_.device,
                    "technique": rec_.technique,
                    "sparsity": rec_.sparsity,
                    "mux": rec_.mux,
                    "mux_variant": rec_.mux_variant,
                    "students": rec_.students,
                    "student_depth": rec_.student_depth,
                    "source": rec_.source,
                    "accuracy_loss": rec_.accuracy_loss,
                    "speedup": rec_.speedup,
                    "predicted_accuracy_loss": rec_.predicted_accuracy_loss,
                    "accuracy_loss_low": rec_.accuracy_loss_interval.low,
                    "accuracy_loss_high": rec_.accuracy_loss_interval.high,
                    "predicted_speedup": rec_.predicted_speedup,
                    "speedup_low": rec_.speedup_interval.low,
                    "speedup_high": rec_.speedup_interval.high,
                    "measured_trial": m.number if m else -1,
                    "measured_accuracy_loss": m.accuracy_loss if m else math.nan,
                    "measured_speedup": m.speedup if m else math.nan,
                    **_suggestion_columns(rec_.suggestion),
                }
            )
        return pd.DataFrame(rows, columns=list(OUTPUT_COLUMNS))


def _suggestion_columns(sg: Any) -> dict[str, Any]:
    if sg is None:
        return {
            "suggested_sparsity": math.nan,
            "suggested_mux": -1,
            "suggested_technique": "",
            "suggested_predicted_accuracy_loss": math.nan,
            "suggested_accuracy_loss_high": math.nan,
            "suggested_predicted_speedup": math.nan,
        }
    return {
        "suggested_sparsity": float(sg.config.get("sparsity", 0.0)),
        "suggested_mux": int(sg.config.get("mux", 1)),
        "suggested_technique": str(sg.config.get("technique", "prumux")),
        "suggested_predicted_accuracy_loss": sg.predicted_accuracy_loss,
        "suggested_accuracy_loss_high": sg.accuracy_loss_interval.high,
        "suggested_predicted_speedup": sg.predicted_speedup,
    }


def _opt_str(v: Any) -> str | None:
    if v is None or (isinstance(v, float) and math.isnan(v)) or v == "":
        return None
    return str(v)


@contextlib.contextmanager
def _mlflow_uris(uri: str) -> Iterator[None]:
    """Point MLflow's fluent API at `uri` for the block only: mlflow.set_tracking_uri also
    exports MLFLOW_TRACKING_URI, which would leak into later calls and child processes."""
    import mlflow
    from mlflow.tracking._model_registry import utils as reg_utils
    from mlflow.tracking._tracking_service import utils as trk_utils

    names = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
    saved_env = {k: os.environ.get(k) for k in names}
    saved = (trk_utils._tracking_uri, reg_utils._registry_uri)
    try:
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
        yield
    finally:
        trk_utils._tracking_uri, reg_utils._registry_uri = saved
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def register_recommender(
    recommender: Any,
    *,
    tracking_uri: str | None = None,
    run_id: str | None = None,
    experiment: str = "autoprumux/recommender",
    name: str = REGISTERED_NAME,
) -> str:
    """Log the recommender as a pyfunc model (under `run_id`, or a new run in `experiment`) and
    register it as `name`. Returns the model URI of the new registered version."""
    import mlflow
    import pandas as pd
    from mlflow.models import ModelSignature, infer_signature
    from mlflow.types import ColSpec, Schema

    uri = tracking.resolve_tracking_uri(tracking_uri)
    cl = tracking.client(uri)
    if run_id is None:
        exp_id = tracking.experiment_id(cl, experiment, uri)
        run_id = str(cl.create_run(exp_id, run_name="recommender").info.run_id)
    example = pd.DataFrame({"budget": [2.0]})
    out = RecommenderModel()
    out.recommender = recommender
    cols: list[Any] = [ColSpec("double", "budget")]
    cols += [ColSpec("string", c, required=False) for c in ("task", "model", "device")]
    inputs = Schema(cols)
    outputs = infer_signature(example, out.predict(None, example)).outputs
    signature = ModelSignature(inputs=inputs, outputs=outputs)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "recommender.pkl"
        path.write_bytes(pickle.dumps(recommender))
        with _mlflow_uris(uri), mlflow.start_run(run_id=run_id):
            info = mlflow.pyfunc.log_model(
                name="recommender",
                python_model=RecommenderModel(),
                artifacts={"recommender": str(path)},
                signature=signature,
                input_example=example,
                registered_model_name=name,
                pip_requirements=["autoprumux", "lightgbm", "scikit-learn", "pandas"],
            )
    version = info.registered_model_version
    return f"models:/{name}/{version}"
