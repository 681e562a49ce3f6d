"""One configuration measured as a new trial of an existing study (`autoprumux evaluate
--study`): what `recommend` suggests from a prediction becomes a measurement in the study it
came from, with the study's own space, recipe, data, device, throughput settings, budget,
sampler and margin (its attributes, see `Searcher._check_study_matches`), on the machine the
study ran on (`_identity`).

The configuration is enqueued as a trial (a grid or guided study's by its grid index) and run
through the search's objective, so it is stopped early, recorded and tracked in MLflow like any
other trial; it counts towards the study's target but never stands down as surplus. Trials a
dead worker left waiting for their retry are run first, as a search would.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from autoprumux.config import Candidate, ThroughputConfig
from autoprumux.search._settings import SearchSettings
from autoprumux.search._space import SearchSpace
from autoprumux.search._workers import REQUESTED

if TYPE_CHECKING:
    from autoprumux.search._study import Searcher


def settings_from_study(
    attrs: dict[str, Any],
    study: str,
    storage: str | None,
    *,
    data_dir: str | None = None,
    cache_dir: str | None = None,
) -> SearchSettings:
    """The settings the study `study` (user attributes `attrs`) was searched with; `data_dir`
    and `cache_dir` replace the recorded paths (another checkout of the same data and cache)."""
    space = SearchSpace.from_dict(attrs["space"], source=f"study {study}")
    run = attrs.get("settings") or {}
    device = str(attrs.get("device", "cpu"))
    timing = {**attrs.get("throughput", {}), **run.get("throughput", {}), "device": device}
    return SearchSettings(
        space=space,
        trials=int(attrs.get("target_trials", SearchSettings.trials)),
        storage=storage,
        study_name=study,
        tracking_uri=attrs.get("tracking_uri"),
        budget=float(attrs.get("budget", SearchSettings.budget)),
        sampler=str(attrs.get("sampler", SearchSettings.sampler)),
        prune_margin=float(attrs.get("prune_margin", SearchSettings.prune_margin)),
        device=device,
        cache_dir=cache_dir or run.get("cache_dir"),
        data_dir=data_dir or run.get("data_dir"),
        data_source=str(run.get("data_source", SearchSettings.data_source)),
        warmup_corpus=str(run.get("warmup_corpus", SearchSettings.warmup_corpus)),
        throughput=ThroughputConfig(**timing),
        show_progress=False,
    )


def trial_params(searcher: Searcher, config: Candidate) -> dict[str, Any]:
    """The params that make a trial of the searcher's study sample `config` (refused with the
    dimension it is outside of when it is not in the study's grid)."""
    from autoprumux.search._study import GRID_PARAM

    searcher.space.check_member(config)
    if searcher.s.sampler in ("grid", "guided"):
        return {GRID_PARAM: searcher._grid.index(config)}
    return searcher.space.params_of(config)


def measure(searcher: Searcher, config: Candidate) -> Any:
    """Run `config` as a new trial of the searcher's study (see the module docstring); its
    FrozenTrial: finished (COMPLETE, PRUNED or FAIL), or RUNNING when another worker of the
    study took it from the queue first."""
    params = trial_params(searcher, config)
    study = searcher.study
    # the baseline first, as `Searcher.run`: every trial's loss is relative to it
    searcher.pipeline(searcher.variants[0]).baseline_metrics()
    token = uuid.uuid4().hex
    study.enqueue_trial(params, user_attrs={REQUESTED: token})

    def mine() -> Any:
        return next(
            t for t in study.get_trials(deepcopy=False) if t.user_attrs.get(REQUESTED) == token
        )

    try:
        while mine().state.name == "WAITING":
            study.optimize(
                searcher.objective,
                n_trials=1,
                catch=(Exception,),
                gc_after_trial=True,
                show_progress_bar=False,
            )
    finally:
        searcher._update_parent()
        searcher.close_parent()
    return mine()
