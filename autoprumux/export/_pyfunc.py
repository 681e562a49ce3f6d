"""An exported model as an MLflow pyfunc: logged with the export directory as its artefact and
registered (default name `autoprumux-<task>`), so `mlflow models serve` or any pyfunc consumer
runs it.

Like the recommender (`serving._pyfunc`), it is logged as "models from code": `python_model` is
the file `_exported_code.py` and the state is the export directory (safetensors weights, JSON,
tokenizer files), so nothing is pickled. Input: a table with a `text` column (and `text_pair`
for a pair task), at most `MAX_ROWS` rows; output: `label`, `probability` and
`probability_<name>` per class. A bad payload raises an MlflowException with
INVALID_PARAMETER_VALUE, which the scoring server answers with HTTP 400.
"""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

from mlflow.pyfunc import PythonModel

from autoprumux import tracking
from autoprumux.errors import ConfigError
from autoprumux.serving._pyfunc import _bad, echo, input_table, mlflow_uris

CODE_FILE = Path(__file__).with_name("_exported_code.py")
ARTIFACT = "export"  # the artefact name of the export directory
EXPERIMENT = "autoprumux/export"
# a request is tokenised and run as a whole; the scoring server holds it all in memory
MAX_ROWS = 10_000
MAX_NAME_CHARS = 200

# what the served model's environment installs beside autoprumux, by the export's format
RUNTIME_REQUIREMENTS = {
    "torch": ("torch", "transformers"),
    "onnx": ("onnxruntime", "tokenizers"),
    "openvino": ("openvino", "tokenizers"),
}


def registered_name(task: str) -> str:
    return f"autoprumux-{task}"


def check_registered_name(name: str) -> str:
    if not name.strip() or len(name) > MAX_NAME_CHARS or "/" in name or ":" in name:
        raise ConfigError(
            f"registered model name {echo(name)} must be 1..{MAX_NAME_CHARS} characters "
            "without '/' or ':', e.g. autoprumux-sst2"
        )
    return name


def text_columns(pair: bool) -> list[str]:
    return ["text", "text_pair"] if pair else ["text"]


class ExportedModel(PythonModel):
    """pyfunc wrapper around `autoprumux.deploy.Predictor` (see the module docstring)."""

    def __init__(self, predictor: Any = None):
        self.predictor = predictor

    def load_context(self, context: Any) -> None:
        from autoprumux.deploy import load

        self.predictor = load(context.artifacts[ARTIFACT])

    # no type hints: MLflow would read them as a schema; the logged signature is the schema
    def predict(self, context, model_input, params=None):  # noqa: ANN001, ANN201
        import pandas as pd

        df = input_table(model_input, "text")
        pred = self.predictor
        cols = text_columns(pred.pair)
        missing = [c for c in cols if c not in df.columns]
        if missing:
            got = [echo(c, 30) for c in list(df.columns)[:10]]
            raise _bad(
                f"input has no {missing} column (columns: {got}); send e.g. "
                f'{{"dataframe_records": [{{{", ".join(f"{c!r}: ..." for c in cols)}}}]}}'
            )
        if len(df) > MAX_ROWS:
            raise _bad(
                f"the input has {len(df):,} rows, more than the limit of {MAX_ROWS:,} per "
                "request; split it into several requests"
            )
        values = [df[c].tolist() for c in cols]
        for c, vs in zip(cols, values, strict=True):
            for i, v in enumerate(vs):
                if not isinstance(v, str):
                    what = "missing" if v is None or _nan(v) else f"not a string: {echo(v)}"
                    raise _bad(f"row {i}: {c} is {what}")
        texts = list(zip(*values, strict=True)) if pred.pair else values[0]
        return pd.DataFrame(pred.predict(texts).columns())


def _nan(v: Any) -> bool:
    return isinstance(v, float) and math.isnan(v)


def register_export(
    directory: str | Path,
    *,
    tracking_uri: str | None = None,
    name: str | None = None,
    experiment: str = EXPERIMENT,
) -> str:
    """Log the export at `directory` as a pyfunc model (a new run in `experiment`, with the
    configuration as parameters and the measurement as metrics) and register it as `name`
    (default `autoprumux-<task>`). Returns the model URI of the new registered version."""
    import mlflow
    import pandas as pd
    from mlflow.models import ModelSignature, infer_signature
    from mlflow.types import ColSpec, Schema

    from autoprumux.deploy import load, read_manifest

    d = Path(directory).resolve()
    m = read_manifest(d)
    name = check_registered_name(name or registered_name(m.task))
    uri = tracking.resolve_tracking_uri(tracking_uri)
    cl = tracking.client(uri)
    exp_id = tracking.experiment_id(cl, experiment, uri)
    run = cl.create_run(
        exp_id,
        run_name=f"export {m.task} {m.config.describe()}",
        tags={
            "autoprumux.role": "export",
            **{
                f"autoprumux.source.{k}": v
                for k, v in asdict(m.source).items()
                if v is not None and k != "recorded"
            },
        },
    )
    run_id = str(run.info.run_id)
    r = m.measurement
    tracking.log_run_data(
        cl,
        run_id,
        params={
            **m.config.to_dict(),
            "task": m.task,
            "model": m.base_model,
            "max_seq_len": m.max_seq_len,
        },
        metrics={
            "metric": r.metric,
            "baseline_metric": r.baseline_metric,
            "accuracy_loss": r.accuracy_loss,
            "throughput": r.throughput,
            "baseline_throughput": r.baseline_throughput,
            "speedup": r.speedup,
            **({} if r.validation_loss is None else {"validation_loss": r.validation_loss}),
        },
    )
    cols = text_columns(m.pair)
    example = pd.DataFrame({c: ["a gripping, beautifully acted film"] for c in cols})
    out = ExportedModel(load(d)).predict(None, example)
    signature = ModelSignature(
        inputs=Schema([ColSpec("string", c) for c in cols]),
        outputs=infer_signature(example, out).outputs,
    )
    with mlflow_uris(uri), mlflow.start_run(run_id=run_id):
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(CODE_FILE),  # models from code: nothing is pickled
            artifacts={ARTIFACT: str(d)},
            signature=signature,
            input_example=example,
            registered_model_name=name,
            pip_requirements=[
                "autoprumux",
                *RUNTIME_REQUIREMENTS[m.model_format],
                "pandas",
            ],
        )
    return f"models:/{name}/{info.registered_model_version}"
