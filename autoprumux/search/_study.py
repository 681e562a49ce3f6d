"""The Auto-PruMUX search loop: an Optuna study over a search space, every trial tracked in MLflow.

* storage: any SQLAlchemy URL (default: `sqlite:///autoprumux.db` in the working directory);
  re-running the same command resumes the same study until it holds `trials` finished trials;
  more workers (`autoprumux worker`) join the same study through a shared database.
* objective: maximise the measured speedup subject to the loss on the validation split <= budget
  (TPE's constraint; the dev loss without a split); every finished trial records both losses
  (validation: chosen on; dev: what to expect, see `_record`), speedup, throughput, latency and
  size.
* early stopping: the loss that chooses (validation; dev without a split) of the unpruned N-way
  model (step 0) and after each pruning stage is reported, the same way whether the candidate
  was built or cached; a trial stops at an intermediate step when that loss exceeds the budget
  by more than `prune_margin` points (more pruning rarely wins accuracy back). The last step is never cut short: a finished
  candidate is measured, feasible or not (the meta-model learns from it).
* failures (e.g. out of memory) mark the trial failed and the study goes on; a worker killed
  mid-trial leaves a stale RUNNING trial that the heartbeat marks failed and retries once.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from autoprumux import tracking
from autoprumux._selection import chosen_on, selection_loss
from autoprumux.config import Candidate, ThroughputConfig
from autoprumux.errors import ConfigError
from autoprumux.search._guided import PriorTrial, load_prior, loss_noise
from autoprumux.search._identity import check_identity, identity, run_settings
from autoprumux.search._record import (
    check_recorded,
    log_stage_training,
    pooled_trial_losses,
    record_evaluation,
    record_stopped,
    trial_loss,
)
from autoprumux.search._report import describe_trial, pareto_figure, trial_candidate, trials_table
from autoprumux.search._settings import SearchSettings, study_name_for
from autoprumux.search._space import SearchSpace
from autoprumux.search._workers import FINISHED, SURPLUS, counted, fail_dead_trials, is_surplus

if TYPE_CHECKING:
    from autoprumux.evaluation import DevNoise

log = logging.getLogger("autoprumux")

GRID_PARAM = "grid_point"


def make_sampler(
    kind: str,
    space: SearchSpace,
    seed: int,
    budget: float,
    noise: float = 1.0,
    prior: Sequence[PriorTrial] = (),
    context: Callable[[], dict[str, Any]] | None = None,
) -> Any:
    import optuna

    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if kind == "grid":  # one categorical over the distinct configurations (see Searcher._suggest)
        return optuna.samplers.GridSampler({GRID_PARAM: list(range(len(space.grid())))}, seed=seed)
    if kind == "guided":  # budget-guided: dominance, bisection, constrained EI (see _guided.py)
        from autoprumux.search._guided import make_guided_sampler

        grid = space.grid()
        return make_guided_sampler(
            grid,
            budget,
            GRID_PARAM,
            seed=seed,
            noise=noise,
            prior=prior,
            context=context,
            trains=[space.recipe.trains_own_model(c) for c in grid],
        )

    # the budget constraint is set on each trial (Trial.set_constraint, see Searcher)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(5, len(space.grid())))


@dataclass
class TrialOutcome:
    number: int
    state: str
    config: Candidate | None
    metrics: dict[str, float]
    seconds: float


class TrialEvaluator(Protocol):
    """What a trial needs from the pipeline (PruMuxPipeline is one; a benchmark can replay
    recorded measurements through the real search with another)."""

    @property
    def model_id(self) -> str: ...
    @property
    def dev_size(self) -> int: ...

    def descriptors(self) -> dict[str, float]: ...
    def check_lengths(self, n: int, tp: ThroughputConfig | None = None) -> None: ...
    def baseline_metrics(self) -> dict[str, float]: ...
    def evaluate(
        self,
        config: Candidate,
        *,
        throughput: ThroughputConfig | None = None,
        on_stage: Callable[[int, float, float | None], None] | None = None,
    ) -> Any: ...
    def evaluate_students(
        self, k: int, depth: int, *, throughput: ThroughputConfig | None = None
    ) -> Any: ...


class Searcher:
    """Runs (or joins) one study. Build once, then `run()`; `summary()` any time.

    `evaluator(variant)` builds the trial evaluator of a mux variant (default: the real
    `PruMuxPipeline` of the space's task, model and recipe)."""

    def __init__(
        self,
        settings: SearchSettings,
        *,
        evaluator: Callable[[str], TrialEvaluator] | None = None,
    ):
        import optuna

        self.s = settings
        space = settings.space
        self.space = space
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        # validate everything the trials need before any study or run is created, the tracking
        # store first (cheap, and an unreachable server would otherwise hang for minutes)
        self.tracking_uri = tracking.resolve_tracking_uri(settings.tracking_uri)
        from autoprumux.evaluation import this_machine

        self.machine = this_machine(settings.device)  # the study's, checked when resumed
        self.variants = space.values("mux_variant")
        self.muxes = sorted({int(v) for v in space.values("mux")})
        self._pipes: dict[str, TrialEvaluator] = {}
        self._factory = evaluator or self._pipeline_factory
        first = self.pipeline(self.variants[0])
        for n in self.muxes:
            first.check_lengths(n, settings.throughput)
        space.check_model(first.descriptors)  # mux_layers and the concat combiner fit it
        self.model_id = first.model_id
        self.name = tracking.check_study_name(
            settings.study_name or study_name_for(space, self.model_id)
        )
        self.storage_url = settings.storage or tracking.default_storage()
        # read before any store is made: a bad --prior leaves no study and no MLflow store
        prior = load_prior(self.storage_url, settings.prior, exclude=self.name)
        self.storage = tracking.make_storage(self.storage_url, settings.heartbeat, self._on_stale)
        self.client = tracking.client(self.tracking_uri)
        # a sampler seeded the same way on every rerun or worker proposes the same first
        # configurations again: mix in how far the study is (and, for a worker, which one)
        existing = tracking.trial_count(self.storage, self.name)
        self.study = optuna.create_study(
            study_name=self.name,
            storage=self.storage,
            direction="maximize",
            sampler=make_sampler(
                settings.sampler,
                space,
                (settings.seed + existing + settings.worker_offset) % 2**32,
                settings.budget,
                # the spread of the loss that chooses: the validation split's, else dev's
                noise=loss_noise(getattr(first, "validation_size", 0) or first.dev_size),
                prior=prior,
                context=self._context,
            ),
            pruner=optuna.pruners.NopPruner(),  # the threshold depends on the baseline, see _report
            load_if_exists=True,
        )
        self._check_study_matches()
        self.experiment_id = tracking.experiment_id(
            self.client, f"{tracking.EXPERIMENT_PREFIX}/{self.name}", self.tracking_uri
        )
        self.parent_run_id = self._parent_run()
        self.baseline_noise: DevNoise | None = None  # the dev set's, once `run` measured it
        self.baseline_convergence: str | None = None  # a trained baseline's, once measured
        self._grid = space.grid()  # the grid sampler's configurations, by index

    # ---- set-up ------------------------------------------------------------------------------
    def _pipeline_factory(self, variant: str) -> TrialEvaluator:
        from autoprumux.pipeline import PruMuxPipeline

        s = self.s
        return PruMuxPipeline(
            task=self.space.glue_task,
            data=self.space.data,
            metric=self.space.metric,
            pos_label=self.space.pos_label,
            model=self.space.model,
            recipe=self.space.recipe,
            device=s.device,
            data_dir=s.data_dir,
            data_source=s.data_source,
            cache_dir=s.cache_dir,
            mux_variant=variant,
            warmup_corpus=s.warmup_corpus,
        )

    def _context(self) -> dict[str, Any]:
        """This study's context for the meta-model (the baseline's metric: trained once, cached)."""
        from autoprumux.meta import context_of

        pipe = self.pipeline(self.variants[0])
        return context_of(self._study_attrs(), pipe.baseline_metrics()["metric"])

    def pipeline(self, variant: str) -> Any:
        if variant not in self._pipes:
            self._pipes[variant] = self._factory(variant)
        return self._pipes[variant]

    def _study_attrs(self) -> dict[str, Any]:
        pipe = self.pipeline(self.variants[0])
        return {
            "descriptors": pipe.descriptors(),
            "space": self.space.to_dict(),
            "candidates": [c.to_dict() for c in self.space.grid()],
            "task": self.space.task,
            "model": self.model_id,
            "device": self.s.device,
            "throughput": {
                "batch_size": self.s.throughput.batch_size,
                "seq_len": self.s.throughput.seq_len,
            },
        }

    def _check_study_matches(self) -> None:
        want = self._study_attrs()
        have = self.study.user_attrs
        bound = identity(self.s, self.machine)
        if not have:
            for k, v in {**want, **bound}.items():
                self.study.set_user_attr(k, v)
            self.study.set_user_attr("tracking_uri", self.tracking_uri)
            self.study.set_user_attr("target_trials", self.s.trials)
            self.study.set_user_attr("settings", run_settings(self.s))
            return
        check_identity(have, bound, self.name, tracking.redact_url(self.storage_url))
        check_recorded(self.study.get_trials(deepcopy=False), self.name)
        for k, v in want.items():
            # new since the study began; derived; or descriptors that gained keys since
            grown = k == "descriptors" and k in have and have[k].items() <= v.items()
            if k not in have or k == "candidates" or grown:
                self.study.set_user_attr(k, v)
            elif have[k] != v:
                raise ConfigError(
                    f"study {self.name!r} in {self.storage_url} was created with a different {k} "
                    f"({have[k]!r}, now {v!r}); pass another --study-name to start a new study"
                )

    def _parent_run(self) -> str:
        q = "tags.`autoprumux.role` = 'study'"
        runs = self.client.search_runs(
            [self.experiment_id], filter_string=q, order_by=["attributes.start_time ASC"]
        )
        if runs:
            return str(runs[0].info.run_id)
        run = self.client.create_run(
            self.experiment_id,
            run_name=self.name,
            tags={"autoprumux.role": "study", "autoprumux.study": self.name},
        )
        rid = str(run.info.run_id)
        tracking.log_run_data(
            self.client,
            rid,
            params={
                "task": self.space.task,
                "model": self.model_id,
                "device": self.s.device,
                "budget": self.s.budget,
                "sampler": self.s.sampler,
                "prune_margin": self.s.prune_margin,
                "storage": tracking.redact_url(self.storage_url),
                **self._machine_params(),
                **{f"recipe.{k}": v for k, v in self.space.recipe.__dict__.items()},
            },
        )
        tracking.log_text(self.client, rid, self.space.to_yaml(), "search_space.yaml")
        # two workers may have raced: keep the earliest parent, drop ours
        runs = self.client.search_runs(
            [self.experiment_id], filter_string=q, order_by=["attributes.start_time ASC"]
        )
        first = str(runs[0].info.run_id)
        if first != rid:
            self.client.delete_run(rid)
        self.study.set_user_attr("mlflow_parent_run_id", first)
        return first

    def _machine_params(self) -> dict[str, str]:
        return {"machine": self.machine.describe(), "machine_key": self.machine.key}

    def _on_stale(self, study: Any, trial: Any) -> None:
        """A RUNNING trial whose worker died: close its MLflow run as failed (it is retried)."""
        run_id = trial.user_attrs.get("mlflow_run_id")
        if not run_id:
            return
        try:
            tracking.log_run_data(
                self.client,
                run_id,
                tags={
                    "autoprumux.state": "FAIL",
                    "autoprumux.error": "stale: its worker stopped sending heartbeats",
                },
            )
            self.client.set_terminated(run_id, "FAILED")
        except Exception as e:  # noqa: BLE001 - never block the retry
            log.warning("could not close the MLflow run of stale trial %d: %s", trial.number, e)

    # ---- trials ------------------------------------------------------------------------------
    def _suggest(self, trial: Any) -> Candidate:
        """Sample a configuration: the technique first, then only that technique's dimensions
        (define-by-run, see `SearchSpace.suggest`)."""
        if self.s.sampler in ("grid", "guided"):
            return self._grid[trial.suggest_categorical(GRID_PARAM, list(range(len(self._grid))))]
        return self.space.suggest(trial)

    def _report_loss(
        self, trial: Any, step: int, dev: float, val: float | None, run_id: str, last: bool
    ) -> None:
        """Report an intermediate step's loss that chooses (validation; dev without a split);
        stop the trial when it is beyond the budget by more than the margin at a step that is not
        the last (see the module docstring)."""
        import optuna

        loss = selection_loss(dev, val)
        trial.report(loss, step)
        trial.set_user_attr("intermediate_loss", loss)
        self.client.log_metric(run_id, "intermediate_accuracy_loss", dev, step=step)
        if val is not None:
            self.client.log_metric(run_id, "intermediate_validation_loss", val, step=step)
        if not last and loss > self.s.budget + self.s.prune_margin:
            record_stopped(trial, dev, val, self.s.budget)
            raise optuna.TrialPruned(
                f"{chosen_on(val)} loss {loss:.2f} at step {step} is more than "
                f"{self.s.prune_margin:g} points above the budget ({self.s.budget:g})"
            )

    def _evaluate(self, trial: Any, cfg: Candidate, run_id: str) -> Any:
        """One configuration measured beside its baseline, a PruMUX one reporting its loss that
        chooses (validation; dev without a split) after each pruning stage (a hopeless one is
        pruned; students report none)."""
        from autoprumux.pipeline import last_stage

        pipe = self.pipeline(cfg.mux_variant)
        last = last_stage(self.space.recipe, cfg)  # a pruned late model reports one step

        def on_stage(stage: int, dev: float, val: float | None) -> None:
            self._report_loss(trial, stage, dev, val, run_id, last=stage >= last)

        return pipe.evaluate(cfg, throughput=self.s.throughput, on_stage=on_stage)

    def objective(self, trial: Any) -> float:
        import optuna

        t0 = time.perf_counter()
        # first: a rerun recognises the trial of a killed worker by its host and pid
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        if is_surplus(self.study, trial, self.s.trials):
            trial.set_user_attr(SURPLUS, True)
            raise optuna.TrialPruned("the study's target was reached by another worker's trial")
        cfg = self._suggest(trial)
        trial.set_user_attr("config", cfg.to_dict())
        trial.set_user_attr("machine", self.machine.to_dict())
        run = tracking.TrialRun(
            self.client,
            self.experiment_id,
            name=f"trial-{trial.number}",
            tags={
                "mlflow.parentRunId": self.parent_run_id,
                "autoprumux.role": "trial",
                "autoprumux.study": self.name,
                "autoprumux.trial_number": str(trial.number),
                "autoprumux.trial_id": str(trial._trial_id),
            },
            params={
                **cfg.to_dict(),
                "task": self.space.task,
                "model": self.model_id,
                "device": self.s.device,
                **self._machine_params(),
            },
            files={
                "config.json": {"trial": trial.number, **cfg.to_dict()},
                "search_space.yaml": self.space.to_yaml(),
            },
            stopped=(optuna.TrialPruned,),
        )
        before = time.perf_counter() - t0
        try:
            with run:
                trial.set_user_attr("mlflow_run_id", run.run_id)
                w0 = time.perf_counter()
                ev = self._evaluate(trial, cfg, run.run_id)
                work = time.perf_counter() - w0
                metrics = record_evaluation(trial, ev, self.s.budget)
                run.record(
                    metrics=metrics,
                    params={"chosen_on": ev.chosen_on},
                    files={"evaluation.json": ev.to_dict()},
                )
                log_stage_training(self.client, run.run_id, ev)
        except optuna.TrialPruned:
            raise
        except Exception as e:
            # Optuna only logs why a trial failed: the study and its MLflow run both keep it
            trial.set_user_attr("error", run.error or tracking.failure_reason(e))
            log.warning("trial %d failed: %s: %s", trial.number, type(e).__name__, e)
            raise
        overhead = before + run.seconds
        trial.set_user_attr("trial_seconds", work + overhead)
        trial.set_user_attr("tracking_overhead_seconds", overhead)
        return float(ev.speedup)

    # ---- loop --------------------------------------------------------------------------------
    def finished(self) -> list[Any]:
        trials = counted(self.study.get_trials(deepcopy=False))
        return [t for t in trials if t.state.name in FINISHED]

    def best_feasible(self, budget: float | None = None) -> Any | None:
        """The fastest finished trial whose loss that chooses, pooled along sparsity over the
        finished trials (`pooled_trial_losses`), is within budget."""
        b = self.s.budget if budget is None else budget
        done = [t for t in self.study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
        ok = [
            t
            for t, loss in zip(done, pooled_trial_losses(done), strict=True)
            if loss is not None and loss <= b
        ]
        return max(ok, key=lambda t: float(t.value or 0.0)) if ok else None

    def run(self) -> list[TrialOutcome]:
        """Run trials until the study holds `trials` finished ones (counting the trials other
        workers are running, so that joined workers do not overshoot), then close the parent
        run. Trials of dead workers are failed and retried first (see `_workers.fail_dead_trials`)."""
        from tqdm.auto import tqdm

        # the baseline first: every trial's loss and the pruner's threshold are relative to it
        self._check_baseline(self.pipeline(self.variants[0]))
        fail_dead_trials(self.study, self.storage)
        done = len(self.finished())
        if done >= self.s.trials and not self._pending():
            log.info("study %s already holds %d finished trials", self.name, done)
            self._update_parent()
            self.close_parent()
            return []
        bar = tqdm(
            total=self.s.trials,
            initial=done,
            desc=f"search {self.name}",
            unit="trial",
            disable=not self.s.show_progress,
            dynamic_ncols=True,
        )
        outcomes: list[TrialOutcome] = []

        def after(study: Any, t: Any) -> None:
            if t.user_attrs.get(SURPLUS):
                return
            outcomes.append(
                TrialOutcome(
                    t.number,
                    t.state.name,
                    trial_candidate(t),
                    {k: v for k, v in t.user_attrs.items() if isinstance(v, (int, float))},
                    (t.datetime_complete - t.datetime_start).total_seconds()
                    if t.datetime_complete and t.datetime_start
                    else 0.0,
                )
            )
            best = self.best_feasible()
            bar.update(1)
            bar.set_postfix_str(
                f"last: {describe_trial(t)} | best within {self.s.budget:g} pts: "
                + (describe_trial(best) if best else "none yet")
            )
            self._update_parent()

        try:
            while True:
                fail_dead_trials(self.study, self.storage)
                running = len(self._trials("RUNNING"))
                # a retry of a failed stale trial waits in the queue: it runs even at the target
                if len(self.finished()) + running >= self.s.trials and not self._pending():
                    break
                self.study.optimize(
                    self.objective,
                    n_trials=1,
                    catch=(Exception,),
                    callbacks=[after],
                    gc_after_trial=True,
                    show_progress_bar=False,
                )
        finally:
            bar.close()
        self.close_parent()
        return outcomes

    def _check_baseline(self, pipe: TrialEvaluator) -> None:
        """Measure the baseline; one within noise of the majority class is refused unless
        `force` (an evaluator without `dev_noise`, e.g. a replay, is not checked)."""
        pipe.baseline_metrics()
        self._log_baseline_training(pipe)
        noise = pipe.dev_noise() if hasattr(pipe, "dev_noise") else None
        self.baseline_noise = noise
        if noise is None or not noise.near_majority:
            return
        if not self.s.force:
            self.close_parent()
            raise ConfigError(f"{noise.warning()}; pass --force to search it anyway")
        log.warning("searching anyway (--force): %s", noise.warning())

    def _log_baseline_training(self, pipe: TrialEvaluator) -> None:
        """A trained baseline's learning curve and convergence on the parent run (an evaluator
        without `baseline_training`, e.g. a replay, has none)."""
        training = pipe.baseline_training() if hasattr(pipe, "baseline_training") else None
        if training is None:
            return
        from autoprumux.training import describe_convergence

        metric = getattr(getattr(pipe, "task", None), "metric", "metric")
        self.baseline_convergence = describe_convergence(training, metric)
        try:
            tracking.log_learning_curve(self.client, self.parent_run_id, training, "baseline")
        except Exception as e:  # noqa: BLE001 - bookkeeping never fails a search
            log.warning("could not log the baseline's learning curve to MLflow: %s", e)

    def _trials(self, *states: str) -> list[Any]:
        return [t for t in self.study.get_trials(deepcopy=False) if t.state.name in states]

    def _pending(self) -> bool:
        return bool(self._trials("WAITING"))

    def close_parent(self) -> None:
        """The parent run ends with each run of the command (a rerun reopens it); the
        experiment's trials view (`tracking.save_trials_view`) takes the trials' keys."""
        try:
            self.client.set_terminated(self.parent_run_id, "FINISHED")
        except Exception as e:  # noqa: BLE001 - bookkeeping never fails a finished search
            log.warning("could not close the study's MLflow run: %s", e)
        try:
            tracking.save_trials_view(self.client, self.experiment_id)
        except Exception as e:  # noqa: BLE001 - nor does the dashboard's view
            log.warning("could not store the study's trials view in MLflow: %s", e)

    def _update_parent(self) -> None:
        """Best feasible trial as parent metrics, and the Pareto front plot as an artefact."""
        trials = [t for t in self.study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
        metrics: dict[str, float] = {"finished_trials": float(len(self.finished()))}
        best = self.best_feasible()
        if best is not None:
            metrics.update(
                best_feasible_speedup=float(best.value),
                best_feasible_accuracy_loss=float(best.user_attrs["accuracy_loss"]),  # dev
                best_feasible_selection_loss=float(trial_loss(best) or 0.0),  # chosen on
                best_feasible_trial=float(best.number),
            )
        tracking.log_run_data(self.client, self.parent_run_id, metrics=metrics)
        if trials:
            try:
                fig = pareto_figure(trials, self.s.budget, title=self.name)
                tracking.log_figure_png(
                    self.client, self.parent_run_id, fig, tracking.PARETO_FIGURE
                )
            except Exception as e:  # noqa: BLE001 - a plot never fails a study
                log.warning("pareto plot skipped: %s", e)

    # ---- results -----------------------------------------------------------------------------
    def report(self) -> str:
        """A table of the study's trials and its best feasible one."""
        trials = counted(self.study.get_trials(deepcopy=False))
        return trials_table(trials, self.best_feasible(), self.s.budget)
