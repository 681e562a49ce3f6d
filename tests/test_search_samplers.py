"""Every sampler reaches every value of every searched dimension, through the real search
(Optuna study in SQLite, MLflow runs) with each trial's evaluation replayed: nothing trains."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from autoprumux.config import Candidate
from autoprumux.evaluation import Evaluation, Measured, ThroughputConfig
from autoprumux.search import Searcher, SearchSettings, SearchSpace
from autoprumux.search._space import PARAMS

SMALL = {
    "name": "small",
    "task": "sst2",
    "model": None,
    "recipe": {"prune_stages": 2},
    "params": {
        "technique": {"choices": ["prumux", "students"]},
        "sparsity": {"choices": [0.0, 0.5]},
        "mux": {"choices": [1, 2]},
        "mux_layers": {"choices": [0, 1]},
        "students": {"choices": [1, 2]},
        "precision": {"choices": ["fp32", "int8"]},
    },
}


def replayed(config: Candidate) -> tuple[float, float]:
    """(accuracy loss, speedup) of a configuration: more aggressive, faster and less accurate."""
    if config.technique == "students":
        speed = 6.0 / config.students
    else:
        speed = config.mux / (1.0 - config.sparsity) / (1.0 + 0.2 * config.mux_layers)
    if config.precision == "int8":
        speed *= 1.5
    return 0.4 * (speed - 1.0), speed


class ReplayEvaluator:
    """A trial evaluator (see `autoprumux.search.TrialEvaluator`) answering from `truth`;
    `stages` lists the pipeline steps it reports for a configuration (default: the unpruned
    N > 1 model and `prune_stages` pruning stages)."""

    model_id = "replay-tiny"
    dev_size = 872

    def __init__(
        self,
        truth: Callable[[Candidate], tuple[float, float]] = replayed,
        stages: Callable[[Candidate], list[int]] | None = None,
        prune_stages: int = 2,
    ):
        self.truth = truth
        self.stages = stages or (
            lambda c: (
                ([0] if c.mux > 1 else [])
                + (list(range(1, prune_stages + 1)) if c.sparsity else [])
            )
        )
        self.seen: list[Candidate] = []

    def descriptors(self) -> dict[str, float]:
        return {
            "task_num_labels": 2,
            "task_pair": 0,
            "task_mcc": 0,
            "task_log_train": round(math.log(8000), 6),
            "model_layers": 6,
            "model_hidden": 384,
            "model_log_params": round(math.log(1.8e7), 6),
            "device_cuda": 0,
        }

    def check_lengths(self, n: int, tp: Any = None) -> None:
        pass

    def baseline_metrics(self) -> dict[str, float]:
        return {"metric": 90.0, "accuracy": 90.0}

    def evaluate(self, config: Candidate, *, throughput: Any = None, on_stage: Any = None) -> Any:
        self.seen.append(config)
        loss, speed = self.truth(config)
        if on_stage is not None:
            for stage in self.stages(config):
                on_stage(stage, loss, None)
        return self._evaluation(config, loss, speed, throughput)

    def evaluate_students(
        self, k: int, depth: int, *, throughput: Any = None, precision: str = "fp32"
    ) -> Any:
        config = Candidate(
            technique="students", students=k, student_depth=depth, precision=precision
        )
        self.seen.append(config)
        loss, speed = self.truth(config)
        return self._evaluation(config, loss, speed, throughput)

    def _evaluation(self, config: Candidate, loss: float, speed: float, tp: Any) -> Evaluation:
        def measured(name: str, metric: float, rate: float) -> Measured:
            return Measured(
                name, config.sparsity, config.mux, metric, metric, rate, 1 / rate, 0, 1 / rate
            )

        return Evaluation(
            task="sst2",
            metric_name="accuracy",
            device="cpu",
            baseline=measured("baseline", 90.0, 1.0),
            candidate=measured(config.describe(), 90.0 - loss, speed),
            throughput_config=tp or ThroughputConfig(),
        )


def replay_settings(space: SearchSpace, tmp: Path, **kw: Any) -> SearchSettings:
    base: dict[str, Any] = {
        "space": space,
        "trials": 3,
        "storage": f"sqlite:///{tmp / 'optuna.db'}",
        "tracking_uri": f"sqlite:///{tmp / 'mlflow.db'}",
        "budget": 2.0,
        "show_progress": False,
    }
    return SearchSettings(**{**base, **kw})


def replay_searcher(settings: SearchSettings, evaluator: ReplayEvaluator | None = None) -> Searcher:
    ev = evaluator or ReplayEvaluator()
    return Searcher(settings, evaluator=lambda variant: ev)


# trials per sampler: the 16-point grid for random, fewer where the sampler spreads its trials
@pytest.mark.parametrize(
    ("sampler", "trials"), [("random", 16), ("tpe", 12), ("grid", 12), ("guided", 10)]
)
def test_every_sampler_reaches_every_value_of_every_dimension(sampler, trials, tmp_path):
    """Precision applies to every technique: TPE and random once sampled only the technique's
    own dimensions, so int8 never came up outside the grid samplers."""
    space = SearchSpace.from_dict(SMALL)
    searcher = replay_searcher(
        replay_settings(space, tmp_path, sampler=sampler, trials=trials, budget=50.0, seed=2)
    )
    searcher.run()
    done = [Candidate.from_dict(t.user_attrs["config"]) for t in searcher.finished()]
    assert len(done) == trials
    for key in PARAMS:
        if key not in space.params:
            continue
        seen = {c.to_dict()[key] for c in done}
        # students' configurations carry the neutral (sparsity 0, N=1) values, and vice versa
        missing = [v for v in space.values(key) if v not in seen]
        assert not missing, (sampler, key, missing, sorted(map(str, seen)))
