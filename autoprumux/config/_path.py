"""The pruning path's grid of levels: where a path keeps a snapshot, and which sparsities a
configuration served by the path may take (`Recipe.path_grid`)."""

from __future__ import annotations

import math

from autoprumux.errors import ConfigError

# levels closer than this are one level (the grid is built from float steps)
PATH_LEVEL_TOLERANCE = 1e-6


def path_levels(max_sparsity: float, step: float) -> list[float]:
    """The path's grid: `step`, 2 x `step`, ... up to `max_sparsity`, which ends it (also when
    it is not a multiple of `step`); rounded to 6 digits, so a level is the same number however
    the grid is reached. The unpruned model (level 0) is the teacher, not a level."""
    if not (step > 0.0 and 0.0 < max_sparsity < 1.0):
        raise ConfigError(
            f"a path needs step ({step}) > 0 and max_sparsity ({max_sparsity}) in (0, 1)"
        )
    count = math.floor(max_sparsity / step + PATH_LEVEL_TOLERANCE)
    levels = [round(step * i, 6) for i in range(1, count + 1)]
    if not levels or levels[-1] < max_sparsity - PATH_LEVEL_TOLERANCE:
        levels.append(round(max_sparsity, 6))
    return levels


def level_of(levels: list[float], sparsity: float) -> float | None:
    """The level of `levels` that `sparsity` is (None: it is none of them)."""
    match = [level for level in levels if abs(level - sparsity) < PATH_LEVEL_TOLERANCE]
    return match[0] if match else None
