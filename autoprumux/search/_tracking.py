"""MLflow tracking for searches: one parent run per study, one nested run per trial.

The default store is local to the working directory: `sqlite:///mlflow.db` for runs and the model
registry, artefacts under `./mlartifacts`. Any tracking URI works (e.g. http://127.0.0.1:5000 of
`autoprumux ui`, shared by several workers). Everything goes through an explicit `MlflowClient`, so
several studies or workers in one process never share hidden "active run" state.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from autoprumux.errors import ConfigError

DEFAULT_DB = "mlflow.db"
DEFAULT_ARTIFACTS = "mlartifacts"
EXPERIMENT_PREFIX = "autoprumux"


def default_tracking_uri(workdir: str | Path | None = None) -> str:
    d = Path(workdir or os.getcwd()).resolve()
    return f"sqlite:///{d / DEFAULT_DB}"


# the tracking stores MLflow accepts that a user here would name
TRACKING_SCHEMES = ("sqlite", "http", "https", "postgresql", "mysql", "mssql", "file", "databricks")


def resolve_tracking_uri(uri: str | None) -> str:
    """--tracking-uri, else $MLFLOW_TRACKING_URI, else the SQLite file in the working directory;
    checked (see `check_tracking_uri`) before anything is created."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()
    if "://" not in uri and not uri.startswith("databricks"):
        # a bare path: a directory store is deprecated in MLflow 3, use a SQLite file there
        p = Path(uri).expanduser().resolve()
        if p.is_file() and p.suffix != ".db":
            raise ConfigError(
                f"tracking URI {uri!r} is a file, not an MLflow store; pass a directory, a "
                "sqlite:///path.db URL or an http://host:port server"
            )
        if p.suffix != ".db":
            p = p / DEFAULT_DB
        uri = f"sqlite:///{p}"
    check_tracking_uri(uri)
    return uri


def check_tracking_uri(uri: str, timeout: float = 3.0) -> None:
    """Refuse, before any work, a tracking URI that cannot work: an unknown scheme, a SQLite
    file under a missing or read-only directory, or a path that is a directory, or a server that
    does not answer within `timeout` seconds (MLflow's client would retry for minutes)."""
    scheme = uri.split("://", 1)[0].split("+", 1)[0].lower() if "://" in uri else uri
    if scheme not in TRACKING_SCHEMES:
        raise ConfigError(
            f"tracking URI {uri!r} has an unknown scheme {scheme!r}; use one of "
            f"{', '.join(s + '://' for s in TRACKING_SCHEMES[:-1])} (e.g. sqlite:///mlflow.db)"
        )
    if scheme == "sqlite" and uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///") :])
        if db.is_dir():
            raise ConfigError(f"tracking URI {uri!r} names a directory; name a .db file in it")
        if not db.parent.is_dir():
            raise ConfigError(
                f"tracking URI {uri!r}: the directory {str(db.parent)!r} does not exist; "
                "create it or choose another --tracking-uri"
            )
        if not os.access(db if db.exists() else db.parent, os.W_OK):
            raise ConfigError(
                f"tracking URI {uri!r} is not writable here; choose another --tracking-uri"
            )
    if scheme in ("http", "https"):
        check_reachable(uri, timeout)


def check_reachable(uri: str, timeout: float = 3.0) -> None:
    """An http(s) tracking server must answer its /health endpoint within `timeout` seconds."""
    import urllib.error
    import urllib.request

    url = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout):
            return
    except urllib.error.HTTPError:
        return  # it answered: a server is there (it may not expose /health)
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        raise ConfigError(
            f"MLflow tracking server {uri} is not reachable ({reason}); start one "
            "(`autoprumux ui`) or pass another --tracking-uri"
        ) from None


def missing_sqlite_file(url: str) -> Path | None:
    """For a sqlite:/// URL whose file does not exist: the path (reading must not create it)."""
    if url.startswith("sqlite:///"):
        p = Path(url[len("sqlite:///") :])
        if not p.is_file():
            return p
    return None


def artifact_root(tracking_uri: str) -> str | None:
    """Artefact location for experiments created on a local SQLite store (beside the file)."""
    if tracking_uri.startswith("sqlite:///"):
        db = Path(tracking_uri[len("sqlite:///") :])
        return (db.parent / DEFAULT_ARTIFACTS).resolve().as_uri()
    return None  # a server decides


def client(tracking_uri: str) -> Any:
    from mlflow.tracking import MlflowClient

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
        return str(exp.experiment_id)
    try:
        return str(cl.create_experiment(name, artifact_location=artifact_root(tracking_uri)))
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


def log_text(cl: Any, run_id: str, text: str, name: str) -> None:
    cl.log_text(run_id, text, name)


def log_json(cl: Any, run_id: str, obj: Any, name: str) -> None:
    cl.log_text(run_id, json.dumps(obj, indent=2, sort_keys=True, default=str), name)


def log_figure_png(cl: Any, run_id: str, fig: Any, name: str) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / name
        fig.savefig(path, dpi=110, bbox_inches="tight")
        cl.log_artifact(run_id, str(path))
