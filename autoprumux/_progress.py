"""Progress bars over long work (training steps, batch scoring) and the running loss shown on them."""

from __future__ import annotations

import math
import os

from tqdm.auto import tqdm


def _progress_enabled() -> bool:
    return os.environ.get("AUTOPRUMUX_PROGRESS", "1") != "0"


class LossMeter:
    """Moving average of a training loss shown on the progress bar; a non-finite loss stops
    training with a message naming the learning rate."""

    def __init__(self, bar: tqdm, lr: float, label: str = "loss"):
        self.bar, self.lr, self.label = bar, lr, label
        self.value: float | None = None

    def update(self, loss: float) -> None:
        if not math.isfinite(loss):
            raise FloatingPointError(
                f"training {self.label} became {loss}; lower the learning rate ({self.lr})"
            )
        self.value = loss if self.value is None else 0.95 * self.value + 0.05 * loss
        self.bar.set_postfix({self.label: f"{self.value:.4g}"})

    @property
    def final(self) -> float:
        return float(self.value or 0.0)


def progress(steps: int, desc: str) -> tqdm:
    """A transient progress bar over training steps (off with AUTOPRUMUX_PROGRESS=0)."""
    return tqdm(
        range(steps), desc=desc, disable=not _progress_enabled(), leave=False, dynamic_ncols=True
    )
