"""Where the local stores live and which tracking URIs are accepted.

By default everything sits in the working directory, where users of MLflow and Optuna look: the
MLflow store (`mlruns/mlflow.db` with artefacts in `mlruns/artifacts`) and the Optuna study
(`autoprumux.db`) beside it. Any tracking URI works (e.g. http://127.0.0.1:5000 of `autoprumux
ui`, shared by several workers); it is checked before any work starts.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from autoprumux.errors import ConfigError

STORE_DIR = "mlruns"
DB_FILE = "mlflow.db"
# artefacts beside a SQLite file: `artifacts` inside STORE_DIR, `mlartifacts` beside any other
# file (MLflow's own default name for a local server)
STORE_ARTIFACTS = "artifacts"
OTHER_ARTIFACTS = "mlartifacts"
STUDY_FILE = "autoprumux.db"

log = logging.getLogger("autoprumux")
_told: set[Path] = set()
# servers that answered once in this process: asked again they only cost a round trip
_reachable: set[str] = set()


def _workdir(workdir: str | Path | None) -> Path:
    return Path(workdir or os.getcwd()).resolve()


def default_storage(workdir: str | Path | None = None) -> str:
    """The Optuna study storage: a SQLite file beside the MLflow store."""
    return f"sqlite:///{_workdir(workdir) / STUDY_FILE}"


def default_tracking_uri(workdir: str | Path | None = None) -> str:
    """The MLflow store in the working directory: `mlruns/mlflow.db` (runs and the model
    registry) with its artefacts in `mlruns/artifacts`. A store an older version left at
    `./mlflow.db` (artefacts in `./mlartifacts`) is still read and written, with a message,
    until it is moved: its runs record their artefacts' absolute paths."""
    d = _workdir(workdir)
    legacy = d / DB_FILE
    if legacy.is_file() and not (d / STORE_DIR / DB_FILE).exists():
        if legacy not in _told:
            _told.add(legacy)
            log.warning(
                "using the MLflow store an older autoprumux left at %s; new stores go to %s. "
                "To move it, start over (delete %s and %s) or keep passing --tracking-uri "
                "sqlite:///%s",
                legacy,
                d / STORE_DIR / DB_FILE,
                legacy,
                d / OTHER_ARTIFACTS,
                legacy,
            )
        return f"sqlite:///{legacy}"
    return f"sqlite:///{d / STORE_DIR / DB_FILE}"


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
            p = p / DB_FILE
        uri = f"sqlite:///{p}"
    check_tracking_uri(uri)
    return uri


# long enough for a server that is up but busy (several workers starting on a small machine); a
# server that is not there refuses the connection at once, so a bad URI still fails fast
REACHABLE_TIMEOUT_S = 15.0


def check_tracking_uri(uri: str, timeout: float = REACHABLE_TIMEOUT_S) -> None:
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
        if not db.parent.is_dir() and not _store_dir(db).parent.is_dir():
            raise ConfigError(
                f"tracking URI {uri!r}: the directory {str(db.parent)!r} does not exist; "
                "create it or choose another --tracking-uri"
            )
        here = db if db.exists() else db.parent if db.parent.is_dir() else db.parent.parent
        if not os.access(here, os.W_OK):
            raise ConfigError(
                f"tracking URI {uri!r} is not writable here; choose another --tracking-uri"
            )
    if scheme in ("http", "https") and uri not in _reachable:
        check_reachable(uri, timeout)
        _reachable.add(uri)


def check_reachable(uri: str, timeout: float = REACHABLE_TIMEOUT_S) -> None:
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


def _store_dir(db: Path) -> Path:
    """The `mlruns/` directory a SQLite file sits in (made when the first run is logged)."""
    return db.parent if db.parent.name == STORE_DIR else db


def make_store_dir(uri: str) -> None:
    """Create the `mlruns/` directory of a local store before MLflow writes to it."""
    if uri.startswith("sqlite:///"):
        d = _store_dir(Path(uri[len("sqlite:///") :]))
        if d.name == STORE_DIR:
            d.mkdir(exist_ok=True)


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
        name = STORE_ARTIFACTS if db.parent.name == STORE_DIR else OTHER_ARTIFACTS
        return (db.parent / name).resolve().as_uri()
    return None  # a server decides
