"""How a configuration is timed (`ThroughputConfig`), the precisions a device offers
(`check_precision`) and the accuracy-loss budget it is judged by (`check_budget`)."""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass

from autoprumux.config._names import (
    DEVICE_PRECISIONS,
    OPENVINO_INSTALL,
    OPENVINO_PACKAGES,
    OPENVINO_PRECISIONS,
)
from autoprumux.errors import ConfigError


# ---- timing -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ThroughputConfig:
    """How throughput is timed: a fixed batch of `batch_size` x `seq_len` tokens, `warmup`
    untimed and `repeats` timed passes on `device`, replayed as CUDA graphs if `cuda_graphs`."""

    batch_size: int = 64
    seq_len: int = 128
    warmup: int = 3
    repeats: int = 10
    device: str = "cpu"
    cuda_graphs: bool = False

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.seq_len < 8 or self.repeats < 1 or self.warmup < 0:
            raise ConfigError(
                f"throughput config invalid (batch {self.batch_size}, seq_len {self.seq_len}, "
                f"repeats {self.repeats}, warmup {self.warmup}); use batch >= 1, seq_len >= 8, repeats >= 1"
            )


# ---- the accuracy-loss budget ----------------------------------------------------------------
def check_precision(precision: str, device: str) -> str:
    """`precision` must be one the device offers (`DEVICE_PRECISIONS`), and an OpenVINO one
    needs its packages installed (`OPENVINO_PACKAGES`, found without importing them)."""
    kind = "cuda" if str(device).startswith("cuda") else "cpu"
    offered = DEVICE_PRECISIONS[kind]
    if precision not in offered:
        raise ConfigError(
            f"precision {precision!r} is not offered on {device}; choose one of {list(offered)}"
        )
    if precision in OPENVINO_PRECISIONS:
        missing = [p for p in OPENVINO_PACKAGES if importlib.util.find_spec(p) is None]
        if missing:
            raise ConfigError(
                f"precision {precision!r} needs {', '.join(missing)}, not installed: "
                f"{OPENVINO_INSTALL}, or choose one of "
                f"{[p for p in offered if p not in OPENVINO_PRECISIONS]}"
            )
    return precision


class Budget(float):
    """An accuracy-loss budget in points that `check_budget` has accepted: checked once where
    it enters (a command's flag, an API call), then trusted wherever it is passed on."""


def check_budget(budget: object) -> Budget:
    """An accuracy-loss budget in points: a finite number in [0, 100] (not a boolean). A
    `Budget` was checked where it entered and is returned as it is."""
    if isinstance(budget, Budget):
        return budget
    not_a_number = ConfigError(
        f"budget {budget!r} is not a number; give the accepted accuracy loss in points, e.g. 2.0"
    )
    if isinstance(budget, bool):
        raise not_a_number
    if not isinstance(budget, (int, float)):
        try:
            budget = float(budget)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise not_a_number from None
    b = float(budget)
    if math.isnan(b) or not 0.0 <= b <= 100.0:
        raise ConfigError(
            f"budget ({budget!r}) must be an accuracy loss in points between 0 and 100, e.g. 2.0"
        )
    return Budget(b)


# the most standard errors an answer may ask for: beyond 3 (one-sided 99.9%) a margin refuses
# nearly every pruned configuration on a validation split of a few hundred texts
MAX_MARGIN_SE = 3.0


def check_margin_se(margin: object) -> float:
    """How many standard errors of its validation loss a configuration pays before its loss is
    compared with a budget (`_selection.selection_loss`): a finite number in [0, 3]."""
    bad = ConfigError(
        f"--margin-se ({margin!r}) must be a number of standard errors between 0 and "
        f"{MAX_MARGIN_SE:g}: 1 (the default) is about 84% one-sided confidence, 2 about 98%, "
        "0 reads the validation loss alone"
    )
    if isinstance(margin, bool):
        raise bad
    try:
        m = float(margin)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise bad from None
    if math.isnan(m) or not 0.0 <= m <= MAX_MARGIN_SE:
        raise bad
    return m
