"""What a measurement reports: one measured model, and a candidate beside its baseline."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import cast

import torch

from autoprumux._selection import chosen_on, selection_loss
from autoprumux.data import metric_label
from autoprumux.evaluation._noise import NOISE_STANDARD_ERRORS, DevNoise
from autoprumux.evaluation._stages import StageRun, stage_runs
from autoprumux.evaluation._throughput import (
    ThroughputConfig,
    model_flops,
    model_runner,
    time_interleaved,
)
from autoprumux.models import AnyModel, RunsSource, StudentEnsemble


@dataclass(frozen=True)
class Measured:
    """One evaluated model: dev metrics (points), throughput and size; its metrics on the
    validation split, scored the same way (None: no validation split)."""

    name: str
    sparsity: float
    n: int
    metric: float
    accuracy: float
    throughput: float  # examples / s
    latency_ms: float  # median time of one batch
    encoder_params: int
    flops: float  # per batch of the throughput config
    extra: dict = field(default_factory=dict)
    validation_metric: float | None = None
    validation_accuracy: float | None = None


def noise_margin(se: float | None, noise: DevNoise | None) -> float | None:
    """The largest loss (or gain) not told apart from none: `NOISE_STANDARD_ERRORS` of its paired
    standard error `se`, else of the split's binomial one (`noise`; None: neither known)."""
    if se is not None:
        return NOISE_STANDARD_ERRORS * se
    return None if noise is None else noise.margin


@dataclass(frozen=True)
class Evaluation:
    """A candidate beside its baseline. `accuracy_loss` is on dev (what to expect);
    `validation_loss` on the validation split, what every choice reads (`selection_loss`, see
    `autoprumux._selection`; the dev loss chooses when there is no split)."""

    task: str
    metric_name: str
    device: str
    baseline: Measured
    candidate: Measured
    throughput_config: ThroughputConfig
    pos_label: str | None = None  # the class f1 scored as positive (`TaskSpec.pos_label`)
    # the dev set's majority-class rate and noise at the baseline's accuracy (see _noise)
    noise: DevNoise | None = None
    # "trained": fine-tuned by autoprumux; "given": the user's own classifier, used as is
    baseline_origin: str = "trained"
    # how a trained baseline stopped (`PlateauStop.summary`; None: given, or no validation split)
    baseline_training: dict | None = None
    # the validation split's majority-class rate and noise (None: no validation split)
    validation_noise: DevNoise | None = None
    # how the candidate's training stages stopped (`PruMuxPipeline.stage_training`, see
    # `stages`; empty: none trained, e.g. the baseline's own configuration; None: unknown)
    stage_training: dict | None = None
    # the paired standard error of `validation_loss` (`paired_loss_se`; None: no split)
    validation_loss_se: float | None = None
    # the paired standard error of `accuracy_loss` on dev (None: not measured)
    accuracy_loss_se: float | None = None

    @property
    def metric_label(self) -> str:
        """The metric as printed: "f1 (positive class 'fraud')", else its name."""
        return metric_label(self.metric_name, self.pos_label)

    @property
    def baseline_convergence(self) -> str | None:
        """One line: the trained baseline converged, or how far a cap left it from its plateau."""
        if self.baseline_training is None:
            return None
        from autoprumux.training import describe_convergence  # loading an export needs no training

        return describe_convergence(self.baseline_training, self.metric_label)

    @property
    def stages(self) -> list[StageRun]:
        """The candidate's training stages, one `StageRun` each, in the order they trained."""
        return stage_runs(self.stage_training)

    @property
    def stage_convergence(self) -> list[str]:
        """One line per training stage: converged, or capped, or unvalidated."""
        return [st.describe(self.metric_label) for st in self.stages]

    @property
    def accuracy_loss(self) -> float:
        return self.baseline.metric - self.candidate.metric

    @property
    def loss_margin(self) -> float | None:
        """The largest dev loss (or gain) not told apart from none (`noise_margin`)."""
        return noise_margin(self.accuracy_loss_se, self.noise)

    @property
    def loss_within_noise(self) -> bool | None:
        """The candidate's loss (or gain) is not told apart from none (None: noise unknown)."""
        margin = self.loss_margin
        return None if margin is None else abs(self.accuracy_loss) <= margin

    @property
    def validation_loss(self) -> float | None:
        """Baseline minus candidate on the validation split (None: no validation split)."""
        b, c = self.baseline.validation_metric, self.candidate.validation_metric
        return None if b is None or c is None else b - c

    @property
    def chosen_on(self) -> str:
        """ "validation", or "dev" when there is no validation split."""
        return chosen_on(self.validation_loss)

    @property
    def selection_loss(self) -> float:
        """The loss a choice reads: on validation plus its standard error margin, else on dev."""
        return selection_loss(self.accuracy_loss, self.validation_loss, self.validation_loss_se)

    @property
    def validation_loss_within_noise(self) -> bool | None:
        """The validation loss is within `NOISE_STANDARD_ERRORS` of its paired standard error
        (of the split's binomial one when that is unknown; None: no split)."""
        v = self.validation_loss
        margin = noise_margin(self.validation_loss_se, self.validation_noise)
        return None if v is None or margin is None else abs(v) <= margin

    @property
    def speedup(self) -> float:
        return self.candidate.throughput / self.baseline.throughput

    @property
    def ideal_speedup(self) -> float:
        """Speedup implied by the FLOP reduction alone."""
        return self.baseline.flops / self.candidate.flops

    def to_dict(self) -> dict:
        return {
            "task": self.task,
            "metric_name": self.metric_name,
            "pos_label": self.pos_label,
            "device": self.device,
            "baseline": asdict(self.baseline),
            "candidate": asdict(self.candidate),
            "accuracy_loss": self.accuracy_loss,
            "accuracy_loss_se": self.accuracy_loss_se,
            "validation_loss": self.validation_loss,
            "validation_loss_se": self.validation_loss_se,
            "selection_loss": self.selection_loss,
            "chosen_on": self.chosen_on,
            "speedup": self.speedup,
            "ideal_speedup": self.ideal_speedup,
            "throughput_config": asdict(self.throughput_config),
            "baseline_origin": self.baseline_origin,
            "baseline_training": self.baseline_training,
            "stage_training": None
            if self.stage_training is None
            else [st.to_dict() for st in self.stages],
            "dev_noise": None if self.noise is None else self.noise.to_dict(),
            "loss_within_noise": self.loss_within_noise,
            "validation_noise": None
            if self.validation_noise is None
            else self.validation_noise.to_dict(),
            "validation_loss_within_noise": self.validation_loss_within_noise,
        }


def describe_model(model: AnyModel) -> dict:
    """The shape of a measured model, for reports and MLflow."""
    if isinstance(model, StudentEnsemble):
        return {
            "technique": "students",
            "students": model.k,
            "active_students": model.active_students,
            "depth": model.depth,
        }
    return {
        "technique": "prumux",
        "layers": len(model.encoder.layers),
        "heads": list(model.encoder.config.heads),
        "ffn": list(model.encoder.config.ffn),
    }


def measure_side_by_side(
    models: dict[str, tuple[AnyModel, dict[str, float] | None]],
    batch: dict[str, torch.Tensor],
    tp: ThroughputConfig,
    dev_metrics: Callable[[AnyModel], dict[str, float]],
    extra_callables: dict[str, tuple[Callable[[], object], int]] | None = None,
) -> tuple[dict[str, Measured], dict[str, float]]:
    """Dev metrics of each model (given, or `dev_metrics(model)`), and throughputs of all of them
    on `batch` timed side by side (interleaved rounds, see `time_interleaved`).
    `extra_callables` are timed in the same rounds (e.g. a reference implementation); their
    throughputs are returned separately."""
    fns = {
        name: model_runner(m, batch, tp.device, cuda_graphs=tp.cuda_graphs)
        for name, (m, _) in models.items()
    }
    fns.update(extra_callables or {})
    timed = time_interleaved(fns, cfg=tp)
    out = {}
    for name, (model, metrics) in models.items():
        metrics = metrics or dev_metrics(model)
        res = timed[name]
        # the shape is the fp32 source's, whatever runs it (tf32, an OpenVINO graph)
        shape = cast(AnyModel, model.model) if isinstance(model, RunsSource) else model
        out[name] = Measured(
            name=name,
            sparsity=round(shape.sparsity(), 4),
            n=shape.n,
            metric=metrics["metric"],
            accuracy=metrics["accuracy"],
            throughput=res.examples_per_second,
            latency_ms=res.latency_ms,
            encoder_params=shape.prunable_parameters()
            if isinstance(shape, StudentEnsemble)
            else shape.encoder.prunable_parameters(),
            flops=model_flops(shape, tp.batch_size, tp.seq_len),
            extra={"metrics": metrics, **describe_model(shape)},
        )
    others = {k: timed[k].examples_per_second for k in (extra_callables or {})}
    return out, others
