"""What a search is asked to do: `SearchSettings`, checked once when made."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from autoprumux import tracking
from autoprumux.config import SAMPLERS, ThroughputConfig, check_budget, check_precision
from autoprumux.errors import ConfigError
from autoprumux.search._space import SearchSpace


@dataclass
class SearchSettings:
    space: SearchSpace
    trials: int = 24
    storage: str | None = None
    study_name: str | None = None
    tracking_uri: str | None = None
    budget: float = 2.0  # accuracy-loss budget (points) of the TPE constraint
    sampler: str = "tpe"  # tpe | guided | random | grid
    seed: int = 0
    device: str = "cpu"
    cache_dir: str | None = None
    data_dir: str | None = None
    data_source: str = "local"
    warmup_corpus: str = "shared"
    throughput: ThroughputConfig = field(default_factory=ThroughputConfig)
    prune_margin: float = 5.0  # points above the budget at an intermediate step that stop a trial
    heartbeat: int = 60  # seconds; a RUNNING trial silent for 2x this is failed and retried
    show_progress: bool = True
    worker_offset: int = 0  # added to the sampler seed, so that joined workers differ
    # earlier studies in the same storage whose finished trials the guided sampler starts from
    # (("all",): every other autoprumux study there)
    prior: tuple[str, ...] = ()
    # search a baseline within noise of the majority class (refused without it)
    force: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.trials, bool) or not isinstance(self.trials, int) or self.trials < 1:
            raise ConfigError(f"--trials ({self.trials!r}) must be a positive integer")
        self.budget = check_budget(self.budget)
        if self.sampler not in SAMPLERS:
            raise ConfigError(f"sampler {self.sampler!r} is not one of {list(SAMPLERS)}")
        if not (self.prune_margin >= 0) or math.isinf(self.prune_margin):
            raise ConfigError(
                f"prune margin ({self.prune_margin!r}) must be a finite number of points >= 0 "
                "above the budget, e.g. 5"
            )
        if isinstance(self.heartbeat, bool) or not isinstance(self.heartbeat, int):
            raise ConfigError(f"heartbeat ({self.heartbeat!r}) must be a whole number of seconds")
        if not 1 <= self.heartbeat <= MAX_HEARTBEAT:
            raise ConfigError(
                f"heartbeat ({self.heartbeat!r}) must be between 1 and {MAX_HEARTBEAT} seconds "
                "(default 60)"
            )
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ConfigError(f"seed ({self.seed!r}) must be an integer")
        if not 0 <= self.seed < 2**32:
            raise ConfigError(f"seed ({self.seed!r}) must be between 0 and 2**32 - 1")
        if self.study_name is not None:
            tracking.check_study_name(self.study_name)
        self.prior = tuple(self.prior)
        if self.prior and self.sampler != "guided":
            raise ConfigError(
                f"--prior {' '.join(self.prior)} needs --sampler guided (the sampler that "
                f"starts from earlier studies' trials), not {self.sampler!r}"
            )
        if "all" in self.prior and len(self.prior) > 1:
            raise ConfigError(
                f"--prior {' '.join(self.prior)}: 'all' already takes every other study; give "
                "it alone, or name the studies"
            )
        for name in self.prior:
            if name != "all":
                tracking.check_study_name(name)
        for precision in self.space.values("precision"):  # before any trial runs
            try:
                check_precision(precision, self.device)
            except ConfigError as e:
                raise ConfigError(
                    f"the search space {self.space.source} searches {e}; set its "
                    "params.precision.choices to what the device offers"
                ) from None


# a heartbeat longer than a day is a mistake (and overflows the heartbeat thread's timer)
MAX_HEARTBEAT = 86_400


def study_name_for(space: SearchSpace, model_id: str) -> str:
    short = Path(model_id.rstrip("/")).name or model_id
    return f"{space.name}-{space.task}-{short}"
