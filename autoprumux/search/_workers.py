"""How workers sharing one study stay out of each other's way: trials of dead workers are
failed (and retried), and a trial started after the study's last slot was taken stands down."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Sequence
from typing import Any

log = logging.getLogger("autoprumux")

# the trial states that count towards a study's target
FINISHED = ("COMPLETE", "PRUNED", "FAIL")
# set on a trial that a worker started after another had taken the study's last slot
SURPLUS = "surplus"
# set on a trial enqueued to measure one configuration (`_measure`): it runs even at the target
REQUESTED = "requested"


def counted(trials: Sequence[Any]) -> list[Any]:
    """The trials that are part of the study: all but those that stood down as surplus."""
    return [t for t in trials if not t.user_attrs.get(SURPLUS)]


def is_surplus(study: Any, trial: Any, target: int) -> bool:
    """Two workers can both see one free slot before either has created its trial. Trial
    numbers follow creation order, so the later one sees the other ahead of it and stands
    down before it samples anything. A retry of a dead worker's trial, and a configuration
    asked for (`REQUESTED`), always run."""
    from optuna.storages import RetryFailedTrialCallback

    trials = counted(study.get_trials(deepcopy=False))
    me = next(t for t in trials if t.number == trial.number)
    retry = RetryFailedTrialCallback.retried_trial_number(me) is not None
    if retry or me.user_attrs.get(REQUESTED):
        return False
    ahead = [
        t for t in trials if t.number < trial.number and t.state.name in (*FINISHED, "RUNNING")
    ]
    return len(ahead) >= target


def fail_dead_trials(study: Any, storage: Any) -> None:
    """Fail (and retry once) RUNNING trials whose worker is gone: those whose heartbeat is
    older than the grace period, and, without waiting for it, those of a worker process on
    this host that no longer exists (a rerun right after a kill would otherwise leave its
    trial RUNNING for ever)."""
    import optuna
    from optuna.trial import TrialState

    optuna.storages.fail_stale_trials(study)
    host = socket.gethostname()
    callback = storage.get_heartbeat_stale_trial_callback()
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        w_host, _, pid = str(t.user_attrs.get("worker", "")).rpartition(":")
        if w_host != host or not pid.isdigit() or int(pid) == os.getpid():
            continue
        if _process_alive(int(pid)):
            continue
        try:
            if not storage.set_trial_state_values(t._trial_id, TrialState.FAIL):
                continue
        except RuntimeError:  # finished meanwhile
            continue
        log.warning("trial %d: its worker (pid %s) is gone; failed and retried", t.number, pid)
        if callback is not None:
            callback(study, study._storage.get_trial(t._trial_id))


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
