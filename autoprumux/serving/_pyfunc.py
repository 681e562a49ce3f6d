"""The recommender as an MLflow pyfunc model: logged, registered and served.

Input: a table with a `budget` column (accuracy-loss points) and `task`, `model`, `device`
columns (each optional while the recommender holds one value of it; the input example shows
them), optional `study` and `machine` (a machine key) columns, at most `MAX_ROWS` rows. A row
whose filters leave several (task, model, device), or trials measured on several machines, is
refused with the choices listed: the server never picks one for the client, nor takes its own
machine for the client's. Output: one row per budget with the answer (`source` "measured" or
"baseline", its measured `validation_loss`, the loss it was chosen on (NaN when `chosen_on` is
not "validation": the dev loss chose), its `accuracy_loss` on dev, what to expect, and `speedup`;
`measured_validation_loss_se`: the validation loss's standard error, one of which the choice
added),
the study and machine it was measured on, the meta-model's predictions for it, and the suggested configuration to measure next
(`suggested_*`; -1 / NaN when there is none). A bad payload raises an MlflowException with
INVALID_PARAMETER_VALUE, which the scoring server answers with HTTP 400; values it echoes are cut
to `ECHO_CHARS` characters.

What is stored, and what `autoprumux serve` trusts
--------------------------------------------------
The recommender is stored as data, never as a pickle: `recommender.json` (the study entries:
study, task, model, device, machine, storage, context, candidate configurations, measured
means; the
meta-model's hyper-parameters, prior coefficients and interval half-widths) and one LightGBM
text model per target (`accuracy_loss.txt`, `log_speedup.txt`). The pyfunc is logged as
"models from code": its `python_model` is the file `_recommender_code.py`, so MLflow writes no
cloudpickled PythonModel either. Loading rebuilds the `Recommender` with `from_dict`, which
checks every field's type and shape.

`autoprumux serve` downloads the model to a private temporary directory and, before MLflow
loads anything, refuses it (`verify_model_dir`) unless its only flavor is python_function with
the models-from-code loader, no extra code paths, exactly the three artefacts above, no pickle
file anywhere, and a code file byte-identical to this installed autoprumux's. So write access to
the artefact store no longer means code execution in the server. Still trusted: this package's
code (the code file runs with the server's rights: it is compared, not sandboxed), the MLmodel
YAML (read with `yaml.safe_load`), the JSON (parsed by `json`, then validated: a forged file can
change the answers, not run code) and LightGBM's C++ parser of the text models (a forged model
can change the predictions; LightGBM is trusted not to be exploitable by its own text format).

A recommender registered before the code file moved from `autoprumux/meta/` to
`autoprumux/serving/` holds the earlier file (the same code, importing `RecommenderModel` from
`autoprumux.meta._pyfunc`): `upgrade_code_file` puts this one in its place in the downloaded copy
when its SHA-256 is one of `LEGACY_CODE_SHA256`, so `autoprumux serve` still loads it; any other
file is left as it is, for `verify_model_dir` to refuse.

How it is served: `_server`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mlflow.pyfunc import PythonModel

from autoprumux import tracking
from autoprumux.config import SAMPLING_ORDER
from autoprumux.errors import ConfigError
from autoprumux.meta._scope import AmbiguousScope

log = logging.getLogger("autoprumux")

REGISTERED_NAME = "autoprumux-recommender"
OUTPUT_COLUMNS = (
    "budget",
    "task",
    "model",
    "device",
    "study",
    "machine_key",
    "machine",
    *SAMPLING_ORDER,  # the answer's configuration: every Candidate field, as a search samples them
    "source",
    "chosen_on",
    "validation_loss",
    "accuracy_loss",
    "speedup",
    "predicted_accuracy_loss",
    "accuracy_loss_low",
    "accuracy_loss_high",
    "predicted_speedup",
    "speedup_low",
    "speedup_high",
    "measured_trial",
    "measured_validation_loss",
    "measured_validation_loss_se",
    "measured_accuracy_loss",
    "measured_speedup",
    "suggested_sparsity",
    "suggested_mux",
    "suggested_mux_layers",
    "suggested_mux_combiner",
    "suggested_technique",
    "suggested_precision",
    "suggested_predicted_accuracy_loss",
    "suggested_accuracy_loss_high",
    "suggested_predicted_speedup",
)

# one row costs a few milliseconds of CPU (a 10,000-row request took about 25 s): cap a request
MAX_ROWS = 1000
# 1,000 rows of {"budget": ..., "task": ..., "model": ..., "device": ...} fit many times over
MAX_BODY_BYTES = 1 << 20
# the deepest valid payload is {"dataframe_split": {"data": [[...]]}} (4); MLflow and pandas
# recurse on what they parse, and Python's json gives up (RecursionError) near 1,000
MAX_JSON_DEPTH = 10
# a task, model, device, study or machine filter longer than this names nothing recorded
MAX_FIELD_CHARS = 1000
# values echoed in error messages are cut to this many characters
ECHO_CHARS = 80
MAX_MESSAGE_CHARS = 2000

CODE_FILE = Path(__file__).with_name("_recommender_code.py")
CODE_LOADER = "mlflow.pyfunc.loaders.code_model"
# the code files earlier versions of autoprumux registered, by SHA-256 (the file as it was in
# autoprumux/meta/): `upgrade_code_file` replaces them with CODE_FILE
LEGACY_CODE_SHA256 = frozenset({"9661e08c4156bde8f5f62660534315516bdb4b97313868e998a83fcec459691d"})
# artefact name -> file name inside the logged model
ARTIFACTS = {
    "recommender": "recommender.json",
    "accuracy_loss_trees": "accuracy_loss.txt",
    "log_speedup_trees": "log_speedup.txt",
}
PICKLE_SUFFIXES = (".pkl", ".pickle", ".cloudpickle", ".joblib", ".dill")
FORMAT_TAG = "autoprumux.recommender_format"
# the recommender stored as JSON + LightGBM text models, nothing pickled (4: one entry per study
# and machine, the machine and study in the output; 5: the validation loss that chose, the dev
# loss beside it, and chosen_on; 6: its code imports autoprumux.serving, so a version stored
# before that is registered again rather than handed back)
FORMAT = "data/6"
# the optional filter columns of a request, in the order Recommender.recommend takes them
FILTER_COLUMNS = ("task", "model", "device", "study", "machine")


def _bad(msg: str) -> Exception:
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

    return MlflowException(cap_message(msg), error_code=INVALID_PARAMETER_VALUE)


def input_table(model_input: Any, wanted: str) -> Any:
    """A served model's input as a DataFrame (a dict of columns is converted), or a 400 naming
    the `wanted` column."""
    import pandas as pd

    df = model_input
    if isinstance(df, dict):
        try:
            df = pd.DataFrame(df)
        except ValueError as e:
            raise _bad(f"cannot read the input as a table: {e}") from None
    if not isinstance(df, pd.DataFrame):
        raise _bad(f"expected a table with a {wanted!r} column, got {type(model_input).__name__}")
    return df


def echo(v: Any, n: int = ECHO_CHARS) -> str:
    """`repr(v)` cut to about `n` characters: what an error message may echo of a value."""
    if isinstance(v, str) and len(v) > n:
        return f"{v[:n]!r}... ({len(v):,} characters)"
    s = repr(v)
    return s if len(s) <= n else s[:n] + "..."


def cap_message(msg: str) -> str:
    return msg if len(msg) <= MAX_MESSAGE_CHARS else msg[:MAX_MESSAGE_CHARS] + "..."


def _clip_values(msg: str, values: tuple[Any, ...]) -> str:
    """`msg` (written by code that echoes values whole) with every long value cut short."""
    for v in values:
        if isinstance(v, str) and len(v) > ECHO_CHARS:
            msg = msg.replace(repr(v), echo(v)).replace(v, echo(v))
    return msg


def save_recommender(recommender: Any, directory: str | Path) -> dict[str, str]:
    """Write the recommender as data into `directory`: its JSON and the meta-model's LightGBM
    text models. Returns the MLflow artefacts mapping (name -> path)."""
    d = Path(directory)
    state = recommender.to_dict(include_trees=False)
    trees = recommender.meta.to_dict()["trees"]
    paths = {name: d / fname for name, fname in ARTIFACTS.items()}
    paths["recommender"].write_text(json.dumps(state, allow_nan=False))
    paths["accuracy_loss_trees"].write_text(trees[0])
    paths["log_speedup_trees"].write_text(trees[1])
    return {k: str(p) for k, p in paths.items()}


def load_recommender(paths: dict[str, str]) -> Any:
    """The `Recommender` `save_recommender` wrote (ValueError for anything else)."""
    from autoprumux.meta._recommend import Recommender

    missing = sorted(set(ARTIFACTS) - set(paths))
    if missing:
        raise ValueError(f"the model lacks the artefacts {missing}")
    state = json.loads(Path(paths["recommender"]).read_text())
    trees = [
        Path(paths["accuracy_loss_trees"]).read_text(),
        Path(paths["log_speedup_trees"]).read_text(),
    ]
    return Recommender.from_dict(state, trees=trees)


class RecommenderModel(PythonModel):
    """pyfunc wrapper around a `Recommender` rebuilt from data (see the module docstring)."""

    def __init__(self, recommender: Any = None):
        self.recommender = recommender

    def load_context(self, context: Any) -> None:
        self.recommender = load_recommender(dict(context.artifacts))

    # no type hints here: MLflow reads them as a (list-based) input schema; the signature logged
    # with the model is the schema
    def predict(self, context, model_input, params=None):  # noqa: ANN001, ANN201
        import numpy as np
        import pandas as pd

        rec = self.recommender
        df = input_table(model_input, "budget")
        if "budget" not in df.columns:
            cols = [echo(c, 30) for c in list(df.columns)[:10]]
            more = f" and {len(df.columns) - 10} more" if len(df.columns) > 10 else ""
            raise _bad(
                f"input has no 'budget' column (columns: {cols}{more}); "
                'send e.g. {"dataframe_records": [{"budget": 2.0}]}'
            )
        if len(df) > MAX_ROWS:
            raise _bad(
                f"the input has {len(df):,} rows, more than the limit of {MAX_ROWS:,} per "
                "request; split it into several requests"
            )
        rows = []
        answers: dict[tuple, Any] = {}  # equal rows are answered once
        for i, r in enumerate(df.to_dict(orient="records")):
            b = r.get("budget")
            if isinstance(b, bool | np.bool_):
                raise _bad(
                    f"row {i}: budget {b} is a boolean, not a number; give the accepted "
                    "accuracy loss in points, e.g. 2.0"
                )
            task, model, device, study, machine = (_opt_str(r.get(k)) for k in FILTER_COLUMNS)
            filters = (task, model, device, study, machine)
            for name, v in zip(FILTER_COLUMNS, filters, strict=True):
                if v is not None and len(v) > MAX_FIELD_CHARS:
                    raise _bad(
                        f"row {i}: {name} {echo(v)} is longer than {MAX_FIELD_CHARS:,} "
                        "characters; give a name a search recorded (or leave it out)"
                    )
            key = (repr(b), *filters)
            if key not in answers:
                try:
                    answers[key] = rec.recommend(
                        b,
                        task,
                        model=model,
                        device=device,
                        study=study,
                        machine=machine,
                        here=False,
                    )
                except AmbiguousScope as e:
                    msg = _clip_values(e.columns_message(), (b, *filters))
                    raise _bad(f"row {i}: {msg}") from None
                except ConfigError as e:
                    raise _bad(f"row {i}: {_clip_values(str(e), (b, *filters))}") from None
            rec_ = answers[key]
            m = rec_.measured
            rows.append(
                {
                    "budget": rec_.budget,
                    "task": rec_.task,
                    "model": rec_.model,
                    "device": rec_.device,
                    "study": rec_.study,
                    "machine_key": rec_.machine_key,
                    "machine": rec_.machine,
                    **rec_.config().to_dict(),
                    "source": rec_.source,
                    "chosen_on": rec_.chosen_on,
                    "validation_loss": _nan(rec_.validation_loss),
                    "accuracy_loss": rec_.accuracy_loss,
                    "speedup": rec_.speedup,
                    "predicted_accuracy_loss": rec_.predicted_accuracy_loss,
                    "accuracy_loss_low": rec_.accuracy_loss_interval.low,
                    "accuracy_loss_high": rec_.accuracy_loss_interval.high,
                    "predicted_speedup": rec_.predicted_speedup,
                    "speedup_low": rec_.speedup_interval.low,
                    "speedup_high": rec_.speedup_interval.high,
                    "measured_trial": m.number if m else -1,
                    "measured_validation_loss": _nan(m.validation_loss) if m else math.nan,
                    "measured_validation_loss_se": _nan(m.validation_loss_se) if m else math.nan,
                    "measured_accuracy_loss": m.accuracy_loss if m else math.nan,
                    "measured_speedup": m.speedup if m else math.nan,
                    **_suggestion_columns(rec_.suggestion),
                }
            )
        return pd.DataFrame(rows, columns=list(OUTPUT_COLUMNS))


def _nan(x: float | None) -> float:
    return math.nan if x is None else x


def _suggestion_columns(sg: Any) -> dict[str, Any]:
    if sg is None:
        return {
            "suggested_sparsity": math.nan,
            "suggested_mux": -1,
            "suggested_mux_layers": -1,
            "suggested_mux_combiner": "",
            "suggested_technique": "",
            "suggested_precision": "",
            "suggested_predicted_accuracy_loss": math.nan,
            "suggested_accuracy_loss_high": math.nan,
            "suggested_predicted_speedup": math.nan,
        }
    return {
        "suggested_sparsity": sg.config.sparsity,
        "suggested_mux": sg.config.mux,
        "suggested_mux_layers": sg.config.mux_layers,
        "suggested_mux_combiner": sg.config.mux_combiner,
        "suggested_technique": sg.config.technique,
        "suggested_precision": sg.config.precision,
        "suggested_predicted_accuracy_loss": sg.predicted_accuracy_loss,
        "suggested_accuracy_loss_high": sg.accuracy_loss_interval.high,
        "suggested_predicted_speedup": sg.predicted_speedup,
    }


def _opt_str(v: Any) -> str | None:
    if v is None or (isinstance(v, float) and math.isnan(v)) or v == "":
        return None
    return str(v)


@contextlib.contextmanager
def mlflow_uris(uri: str) -> Iterator[None]:
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


def input_example(recommender: Any) -> Any:
    """A request the recommender answers, naming its first study's task, model and device (and
    machine, when that (task, model, device) was measured on several): the columns a client
    sends when the store holds several."""
    import pandas as pd

    e = recommender.entries[0]
    row: dict[str, Any] = {"budget": 2.0, "task": e.task, "model": e.model, "device": e.device}
    if len({x.machine_key for x in recommender.entries if x.scope == e.scope}) > 1:
        row["machine"] = e.machine_key
    return pd.DataFrame([row])


def register_recommender(
    recommender: Any,
    *,
    tracking_uri: str | None = None,
    run_id: str | None = None,
    experiment: str = "autoprumux/recommender",
    name: str = REGISTERED_NAME,
) -> str:
    """Log the recommender as a pyfunc model (under `run_id`, or a new run in `experiment`) and
    register it as `name`: data artefacts plus the code file, no pickle (module docstring).
    Returns the model URI of the new registered version."""
    import mlflow
    from mlflow.models import ModelSignature, infer_signature
    from mlflow.types import ColSpec, Schema

    uri = tracking.resolve_tracking_uri(tracking_uri)
    cl = tracking.client(uri)
    if run_id is None:
        exp_id = tracking.experiment_id(cl, experiment, uri)
        run_id = str(cl.create_run(exp_id, run_name="recommender").info.run_id)
    example = input_example(recommender)
    cols: list[Any] = [ColSpec("double", "budget")]
    cols += [ColSpec("string", c, required=False) for c in FILTER_COLUMNS]
    inputs = Schema(cols)
    outputs = infer_signature(example, RecommenderModel(recommender).predict(None, example)).outputs
    signature = ModelSignature(inputs=inputs, outputs=outputs)
    with tempfile.TemporaryDirectory() as d:
        artifacts = save_recommender(recommender, d)
        with mlflow_uris(uri), mlflow.start_run(run_id=run_id):
            info = mlflow.pyfunc.log_model(
                name="recommender",
                python_model=str(CODE_FILE),  # models from code: nothing is pickled
                artifacts=artifacts,
                signature=signature,
                input_example=example,
                registered_model_name=name,
                pip_requirements=["autoprumux", "lightgbm", "scikit-learn", "pandas"],
            )
    version = info.registered_model_version
    cl.set_model_version_tag(name, str(version), FORMAT_TAG, FORMAT)
    return f"models:/{name}/{version}"


# the fingerprint of the trials a registered version was fitted on
TRIALS_TAG = "autoprumux.trials_fingerprint"


def register_if_new(storage_url: str, tracking_uri: str, run_id: str | None) -> str | None:
    """Fit the recommender on every finished trial in `storage_url` and register it (logged
    under `run_id`). Returns the model URI, None with fewer than two trials. When the latest
    registered version was fitted on the same trials and is stored in today's format, its URI
    is returned as it is: a rerun that measured nothing new registers nothing new."""
    import hashlib

    from autoprumux.meta._recommend import Recommender, load_trials

    trials = load_trials(storage_url)
    if len(trials) < 2 or all(t["config"].is_baseline for t in trials):
        log.warning(
            "only %d finished trials, none of them beside the baseline: recommender not registered",
            len(trials),
        )
        return None
    fingerprint = hashlib.sha256(
        json.dumps(
            sorted(
                (t["study"], t["number"], t["accuracy_loss"], t["selection_loss"], t["speedup"])
                for t in trials
            ),
            default=str,
        ).encode()
    ).hexdigest()[:16]
    cl = tracking.client(tracking_uri)
    try:
        versions = cl.search_model_versions(f"name='{REGISTERED_NAME}'")
    except Exception:  # noqa: BLE001 - no registry yet
        versions = []
    if versions:
        latest = max(versions, key=lambda v: int(v.version))
        if latest.tags.get(TRIALS_TAG) == fingerprint and latest.tags.get(FORMAT_TAG) == FORMAT:
            return f"models:/{REGISTERED_NAME}/{latest.version}"
    uri = register_recommender(
        Recommender(trials, storage=storage_url), tracking_uri=tracking_uri, run_id=run_id
    )
    cl.set_model_version_tag(REGISTERED_NAME, uri.rsplit("/", 1)[1], TRIALS_TAG, fingerprint)
    return uri


# ---- what `autoprumux serve` checks before it loads anything ------------------------------


_MODELS_URI = re.compile(r"models:/[^/@]+(/[^/]+|@[^/]+)|models:/m-[0-9a-f]+")


def check_model_uri(model_uri: str) -> None:
    """Refuse, before any work, a model URI that cannot name a model: a malformed `models:` or
    `runs:` URI, or a local path that is not an MLflow model directory."""
    u = model_uri.strip()
    example = f"e.g. models:/{REGISTERED_NAME}/latest, models:/{REGISTERED_NAME}/3"
    if u.startswith("models:"):
        if not _MODELS_URI.fullmatch(u):
            raise ConfigError(
                f"--model-uri {echo(u)} is not a registered-model URI; give "
                f"models:/<name>/<version or latest> or models:/<name>@<alias> ({example})"
            )
        return
    if u.startswith("runs:"):
        if not re.fullmatch(r"runs:/[^/]+/.+", u):
            raise ConfigError(
                f"--model-uri {echo(u)} is not a run model URI; give runs:/<run id>/<path>"
            )
        return
    if "://" in u and not u.startswith("file://"):
        return  # s3://, gs://, ...: the artefact repository says what is wrong
    p = Path(u[len("file://") :] if u.startswith("file://") else u).expanduser()
    if not p.exists():
        raise ConfigError(
            f"--model-uri {echo(u)}: no such file or directory; give a registered model "
            f"({example}) or the directory of a logged model"
        )
    if not (p / "MLmodel").is_file():
        raise ConfigError(
            f"--model-uri {echo(u)} is not an MLflow model directory (it has no MLmodel file)"
        )


def upgrade_code_file(path: str | Path) -> bool:
    """In a downloaded model at `path` (a private copy), replace a code file an earlier autoprumux
    registered (its SHA-256 in `LEGACY_CODE_SHA256`) with this one's. True when it did; any
    other file is left as it is, for `verify_model_dir` to judge."""
    import hashlib

    code = Path(path) / CODE_FILE.name
    if code.is_symlink() or not code.is_file():
        return False
    if hashlib.sha256(code.read_bytes()).hexdigest() not in LEGACY_CODE_SHA256:
        return False
    code.unlink()
    code.write_bytes(CODE_FILE.read_bytes())
    return True


def verify_model_dir(path: str | Path, model_uri: str) -> None:
    """Refuse (ConfigError) a downloaded model unless it is a recommender stored as data that
    loads through this installed code only (see the module docstring); nothing in it is
    executed or unpickled before this passes."""
    import yaml

    root = Path(path).resolve()
    what = f"model {echo(model_uri)}"
    rerun = (
        "register it again with this autoprumux (rerun `autoprumux search`, or call "
        "autoprumux.serving._pyfunc.register_recommender)"
    )
    pickles = sorted(
        str(p.relative_to(root)) for p in root.rglob("*") if p.suffix.lower() in PICKLE_SUFFIXES
    )
    if pickles:
        raise ConfigError(
            f"{what} holds pickle files {pickles[:5]}; autoprumux serve loads only recommenders "
            f"stored as data (unpickling runs arbitrary code): {rerun}"
        )
    try:
        meta = yaml.safe_load((root / "MLmodel").read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"{what} has no readable MLmodel file ({type(e).__name__})") from None
    flavors = meta.get("flavors") if isinstance(meta, dict) else None
    if not isinstance(flavors, dict) or set(flavors) != {"python_function"}:
        got = sorted(flavors) if isinstance(flavors, dict) else flavors
        raise ConfigError(
            f"{what} is not an autoprumux recommender (flavors {echo(got)}, expected only "
            f"python_function): {rerun}"
        )
    pf = flavors["python_function"]
    pf = pf if isinstance(pf, dict) else {}
    code_name = os.path.basename(str(pf.get("model_code_path") or ""))
    if (
        pf.get("loader_module") != CODE_LOADER
        or "python_model" in pf
        or pf.get("code")
        or code_name != CODE_FILE.name
    ):
        raise ConfigError(
            f"{what} is not a recommender logged from autoprumux's code file (a pickled "
            f"PythonModel or extra code paths would run arbitrary code): {rerun}"
        )
    code = root / code_name
    if not code.is_file() or code.read_bytes() != CODE_FILE.read_bytes():
        raise ConfigError(
            f"{what}: its code file {code_name} differs from this autoprumux's "
            f"({CODE_FILE}); it is not executed: {rerun}"
        )
    arts = pf.get("artifacts")
    if not isinstance(arts, dict) or set(arts) != set(ARTIFACTS):
        got = sorted(arts) if isinstance(arts, dict) else arts
        raise ConfigError(
            f"{what} has the artefacts {echo(got)}, expected {sorted(ARTIFACTS)}: {rerun}"
        )
    for name, a in arts.items():
        rel = a.get("path") if isinstance(a, dict) else None
        p = (root / str(rel)).resolve() if rel else None
        if p is None or not p.is_relative_to(root) or not p.is_file():
            raise ConfigError(f"{what}: artefact {name!r} is not a file inside the model")
