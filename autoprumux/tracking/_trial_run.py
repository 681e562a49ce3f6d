"""One search trial's MLflow run as a context manager (`TrialRun`): created with its tags, params
and files on entry, its result recorded by `record`, and terminated on exit as FINISHED, KILLED
(stopped early: why, in ``pruned.txt``) or FAILED (the error as tags and ``error.txt``), so the
search's objective is suggest, evaluate, return. `seconds` is the time spent on tracking."""

from __future__ import annotations

import time
import traceback
from types import TracebackType
from typing import Any

from autoprumux.tracking._mlflow import log_json, log_run_data, log_text

ERROR_CHARS = 500  # the error kept as a tag and as the trial's reason


def failure_reason(e: BaseException) -> str:
    """A failed trial's reason: the error's type and message, capped."""
    return f"{type(e).__name__}: {e}"[:ERROR_CHARS]


class TrialRun:
    """The MLflow run of one trial under the study's run. `files` are logged on entry
    (name -> text, or an object written as JSON); an exception of a type in `stopped` (the
    search's pruning signal) ends the run KILLED, any other FAILED; either is re-raised."""

    def __init__(
        self,
        cl: Any,
        experiment_id: str,
        *,
        name: str,
        tags: dict[str, str],
        params: dict[str, Any],
        files: dict[str, Any],
        stopped: tuple[type[BaseException], ...] = (),
    ):
        self.cl, self.experiment_id, self.name = cl, experiment_id, name
        self.tags, self.params, self.files, self.stopped = tags, params, files, stopped
        self.run_id = ""
        self.seconds = 0.0
        self.error: str | None = None

    def _log_files(self, files: dict[str, Any]) -> None:
        for name, content in files.items():
            if isinstance(content, str):
                log_text(self.cl, self.run_id, content, name)
            else:
                log_json(self.cl, self.run_id, content, name)

    def __enter__(self) -> TrialRun:
        t0 = time.perf_counter()
        run = self.cl.create_run(self.experiment_id, run_name=self.name, tags=self.tags)
        self.run_id = str(run.info.run_id)
        log_run_data(self.cl, self.run_id, params=self.params)
        self._log_files(self.files)
        self.seconds += time.perf_counter() - t0
        return self

    def record(
        self,
        *,
        metrics: dict[str, float] | None = None,
        params: dict[str, Any] | None = None,
        files: dict[str, Any] | None = None,
    ) -> None:
        """The trial's result: its metrics, more params and result files."""
        t0 = time.perf_counter()
        log_run_data(self.cl, self.run_id, metrics=metrics, params=params)
        self._log_files(files or {})
        self.seconds += time.perf_counter() - t0

    def __exit__(
        self,
        typ: type[BaseException] | None,
        e: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        t0 = time.perf_counter()
        if e is None:
            self.cl.set_terminated(self.run_id, "FINISHED")
        elif isinstance(e, self.stopped):
            log_run_data(self.cl, self.run_id, tags={"autoprumux.state": "PRUNED"})
            log_text(self.cl, self.run_id, str(e), "pruned.txt")
            self.cl.set_terminated(self.run_id, "KILLED")
        else:
            self.error = failure_reason(e)
            tags = {"autoprumux.state": "FAIL", "autoprumux.error": self.error}
            log_run_data(self.cl, self.run_id, tags=tags)
            text = "".join(traceback.format_exception(typ, e, tb))
            log_text(self.cl, self.run_id, text, "error.txt")
            self.cl.set_terminated(self.run_id, "FAILED")
        self.seconds += time.perf_counter() - t0
