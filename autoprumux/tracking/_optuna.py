"""The Optuna study storage: opened with a heartbeat, names checked, attributes read.

Any SQLAlchemy URL works; the default is a SQLite file beside the MLflow store (`_stores`).
A worker killed mid-trial leaves a RUNNING trial whose heartbeat goes stale: the storage marks it
failed and retries it once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from autoprumux.errors import ConfigError
from autoprumux.tracking._stores import default_storage, missing_sqlite_file

# Optuna's study names and MLflow's experiment names are limited columns (MLflow's run names too)
MAX_STUDY_NAME = 200


def check_study_name(name: str) -> str:
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"study name ({name!r}) must be a non-empty string")
    if len(name) > MAX_STUDY_NAME:
        raise ConfigError(
            f"study name ({name[:40]!r}..., {len(name)} characters) is longer than "
            f"{MAX_STUDY_NAME} characters; pass a shorter --study-name"
        )
    return name


def make_storage(
    url: str | None, heartbeat: int = 60, on_stale: Callable[[Any, Any], None] | None = None
) -> Any:
    import warnings

    import optuna
    from optuna.storages import RDBStorage

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    url = url or default_storage()
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        kwargs = {"connect_args": {"timeout": 60}}
    try:
        return RDBStorage(
            url,
            engine_kwargs=kwargs,
            heartbeat_interval=heartbeat,
            grace_period=2 * heartbeat,
            heartbeat_stale_trial_callback=_chain(
                optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1), on_stale
            ),
        )
    except Exception as e:  # noqa: BLE001 - any driver/URL error becomes a readable ConfigError
        raise ConfigError(
            f"cannot open the Optuna storage {url!r}: {type(e).__name__}: {e}. "
            "Use a SQLAlchemy URL such as sqlite:///autoprumux.db or "
            "postgresql://user@127.0.0.1:5432/dbname"
        ) from None


def _chain(*callbacks: Callable[[Any, Any], None] | None) -> Callable[[Any, Any], None]:
    def run(study: Any, trial: Any) -> None:
        for cb in callbacks:
            if cb is not None:
                cb(study, trial)

    return run


def trial_count(storage: Any, name: str) -> int:
    """Trials of study `name` in `storage` so far (0 for a new study)."""
    try:
        sid = storage.get_study_id_from_name(name)
    except KeyError:
        return 0
    return len(storage.get_all_trials(sid, deepcopy=False))


def load_study_attrs(storage: str | None, study_name: str) -> dict[str, Any]:
    """User attributes of an existing autoprumux study (a worker joins with these)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = storage or default_storage()
    if missing_sqlite_file(url):
        raise ConfigError(
            f"no study {study_name!r}: the storage file of {url} does not exist; start the study "
            f"with `autoprumux search --study-name {study_name}` or pass --storage"
        )
    try:
        st = optuna.load_study(study_name=study_name, storage=url)
    except KeyError:
        raise ConfigError(
            f"no study {study_name!r} in {url}; start it with `autoprumux search --study-name "
            f"{study_name} --storage {url}`"
        ) from None
    except Exception as e:  # noqa: BLE001
        raise ConfigError(
            f"cannot open the Optuna storage {url!r}: {type(e).__name__}: {e}"
        ) from None
    attrs = dict(st.user_attrs)
    if "space" not in attrs:
        raise ConfigError(f"study {study_name!r} in {url} was not created by autoprumux search")
    return attrs


def redact_url(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        return f"{scheme}://{creds.split(':')[0]}:***@{host}" if ":" in creds else url
    return url
