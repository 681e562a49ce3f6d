"""Training the Academus students: boosting on the teacher's logits, then stacking distillation.

1. The teacher's logits t are computed once over the distillation set.
2. Student j (j = 0..K-1) is fitted around the fixed sum of the students before it,
   S_j = sum_{i<j} s_i, which is recomputed over the whole set after each student (so no earlier
   student runs per step): with loss "mse" it regresses the residual t - S_j (MSE), with "kl" it
   minimises KL(t || S_j + s_j) at a temperature (gradient boosting on the distillation loss:
   the fit goes to the examples whose predicted distribution is off, not to the raw size of
   confident logits).
3. Stacking distillation fine-tunes all students together on the mean over k of the same loss
   between the prefix sum_{i<k} s_i and t: the full sum moves to the teacher while every prefix
   stays a model. `stacking_focus` f puts a share f of that loss on the full sum alone (the
   rest stays the mean over the prefixes): the prefixes compete with the full sum for the same
   weights, and the focus says how much the full sum wins.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from autoprumux._progress import LossMeter, progress
from autoprumux.config import LOGIT_LOSSES, STUDENT_INITS, Recipe, validate_trainer
from autoprumux.data import Encoded, collate, infinite_batches
from autoprumux.errors import ConfigError
from autoprumux.models import MuxSequenceClassifier
from autoprumux.models._encoder import Embeddings, Encoder
from autoprumux.models._mux import MuxConfig
from autoprumux.models._students import (
    Student,
    StudentConfig,
    StudentEnsemble,
    student_first_layers,
)
from autoprumux.training._config import TrainConfig, make_optimizer
from autoprumux.training._loop import predict, train_classifier
from autoprumux.training._losses import logit_fit_loss
from autoprumux.training._stopping import StoppingRule


@dataclass(frozen=True)
class StudentTrainConfig:
    steps_per_student: int = 400
    stacking_steps: int = 200
    batch_size: int = 32
    lr: float = 2e-4
    # the boosting rate of students 2..K, which start from a zero classifier (None: `lr`)
    later_lr: float | None = None
    stacking_lr: float = 5e-5
    # the share of the stacking loss on the full sum of all K students (see the module docstring)
    stacking_focus: float = 0.0
    seed: int = 0
    # the loop of the boosting steps: "standard" or "l2l" (see TrainConfig); the joint stacking
    # step, which runs every student at once, always uses the standard loop
    trainer: str = "standard"
    micro_batches: int = 1
    stash: str = "device"
    # the boosting and stacking loss (see the module docstring) and its temperature
    loss: str = "kl"
    temperature: float = 2.0
    # where each student's layers start in the teacher (`student_first_layers`)
    init: str = "bottom"

    def __post_init__(self) -> None:
        if self.loss not in LOGIT_LOSSES:
            raise ConfigError(f"student loss ({self.loss!r}) must be one of {list(LOGIT_LOSSES)}")
        if not (self.temperature > 0 and math.isfinite(self.temperature)):
            raise ConfigError(f"student temperature ({self.temperature!r}) must be a number > 0")
        if self.init not in STUDENT_INITS:
            raise ConfigError(f"student init ({self.init!r}) must be one of {list(STUDENT_INITS)}")
        for name in ("steps_per_student", "stacking_steps"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ConfigError(f"{name} ({v!r}) must be an integer >= 0")
        if not 0.0 <= self.stacking_focus <= 1.0:
            raise ConfigError(
                f"stacking_focus ({self.stacking_focus!r}) must be in [0, 1] (0: every prefix "
                "alike, 1: the full sum only)"
            )
        if self.batch_size < 1:
            raise ConfigError(f"batch size ({self.batch_size}) must be a positive integer")
        for name in ("lr", "stacking_lr", "later_lr"):
            v = getattr(self, name)
            if v is not None and not v > 0:
                raise ConfigError(f"{name} ({v!r}) must be > 0")
        validate_trainer(self.trainer, self.micro_batches, self.stash, self.batch_size)

    @classmethod
    def from_recipe(cls, r: Recipe) -> StudentTrainConfig:
        """The students' schedule of a recipe (stacking at a quarter of the students' rate)."""
        return cls(
            steps_per_student=r.student_steps,
            stacking_steps=r.student_stacking_steps,
            batch_size=r.batch_size,
            lr=r.student_lr,
            stacking_lr=r.student_lr / 4,
            stacking_focus=r.student_stacking_focus,
            seed=r.seed,
            trainer=r.trainer,
            micro_batches=r.l2l_micro_batches,
            stash=r.l2l_stash,
            loss=r.student_loss,
            init=r.student_init,
        )


def _indexed(items: Sequence[Encoded]) -> list[Encoded]:
    # the label field carries the row index into the target table
    return [Encoded(x.input_ids, x.token_type_ids, i) for i, x in enumerate(items)]


@torch.no_grad()
def ensemble_outputs(
    ens: StudentEnsemble,
    items: Sequence[Encoded],
    *,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """Every student's logits over `items`: (K, len(items), C), on the CPU."""
    ens.to(device).eval()
    out = []
    for s in range(0, len(items), batch_size):
        b = collate(items[s : s + batch_size])
        out.append(
            ens.student_logits(
                b["input_ids"].to(device),
                b["attention_mask"].to(device),
                b["token_type_ids"].to(device),
                active=ens.k,
            )
            .float()
            .cpu()
        )
    return torch.cat(out, dim=1)


def prefix_mse(per_student: torch.Tensor, target: torch.Tensor) -> list[float]:
    """MSE between the sum of the first k students and the target, for k = 1..K."""
    sums = per_student.cumsum(0)
    return [float(F.mse_loss(sums[k], target)) for k in range(per_student.shape[0])]


def student_view(ens: StudentEnsemble, j: int) -> MuxSequenceClassifier:
    """Student j as an N=1 classifier sharing its modules (training the view trains the
    student): the ensemble's frozen embeddings without dropout, the student's layers and pooler,
    its classifier read without head dropout, so the view computes exactly `Student.forward`."""
    s = ens.students[j]
    assert isinstance(s, Student)
    src = ens.embeddings
    emb = Embeddings.__new__(Embeddings)
    nn.Module.__init__(emb)
    emb.word, emb.position, emb.token_type, emb.norm = (
        src.word,
        src.position,
        src.token_type,
        src.norm,
    )
    emb.dropout = nn.Identity()  # type: ignore[assignment]
    d = len(s.layers)
    cfg = ens.encoder_config
    enc = Encoder(
        cfg.with_layers(
            heads=cfg.heads[:d],
            ffn=cfg.ffn[:d],
            attn_present=cfg.attn_present[:d],
            ffn_present=cfg.ffn_present[:d],
            vocab_size=1,  # the shell's own embeddings are replaced below
        )
    )
    enc.embeddings, enc.layers, enc.pooler = emb, s.layers, s.pooler
    view = MuxSequenceClassifier(
        enc, num_labels=ens.num_labels, mux=MuxConfig(n=1, pooling=ens.pooling)
    )
    view.classifier = s.classifier
    view.dropout = nn.Identity()  # type: ignore[assignment]
    return view


def stacking_loss(
    sums: torch.Tensor, targets: torch.Tensor, cfg: TrainConfig, focus: float
) -> torch.Tensor:
    """The stacking loss of the (K, B, C) prefix sums against the (B, C) teacher logits: the
    mean over the prefixes of `cfg.logit_loss`, with a share `focus` moved to the full sum."""
    every_prefix = logit_fit_loss(sums, targets.expand_as(sums), cfg)
    if focus == 0.0:
        return every_prefix
    return (1.0 - focus) * every_prefix + focus * logit_fit_loss(sums[-1], targets, cfg)


def _stack_steps(
    ens: StudentEnsemble,
    items: Sequence[Encoded],
    cfg: TrainConfig,
    *,
    targets: torch.Tensor,
    focus: float,
    device: torch.device,
    on_step: Callable[[int, float], bool] | None = None,
    schedule: Callable[[int], float] | None = None,
) -> dict[str, float]:
    """Stacking distillation: all students jointly, every prefix sum on the teacher's logits
    (`stacking_loss`). `on_step(step, running loss)` ends it early by returning True."""
    t0 = time.perf_counter()
    opt, sched = make_optimizer(ens.students, cfg, schedule=schedule)
    it = infinite_batches(items, cfg.batch_size, seed=cfg.seed)
    targets = targets.to(device)
    ens.train()
    ens.embeddings.eval()  # frozen and shared: no dropout noise in the students' input
    bar = progress(cfg.steps, "stacking distillation")
    meter = LossMeter(bar, cfg.lr, cfg.logit_loss)
    taken = 0
    for _ in bar:
        b = {k: v.to(device) for k, v in next(it).items()}
        with torch.no_grad():
            x, bias = ens.embed(b["input_ids"], b["attention_mask"], b["token_type_ids"])
        y = targets[b["labels"]]
        sums = torch.stack([s(x, bias) for s in ens.students]).cumsum(0)  # (K, B, C)
        loss = stacking_loss(sums, y, cfg, focus)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(ens.students.parameters(), cfg.grad_clip)
        opt.step()
        sched.step()
        meter.update(float(loss.detach()))
        taken += 1
        if on_step is not None and on_step(taken, meter.final):
            break
        ens.embeddings.eval()  # a validation in `on_step` leaves the ensemble in train mode
    bar.close()
    ens.eval()
    return {
        "steps": float(taken),
        "seconds": time.perf_counter() - t0,
        "final_loss": meter.final,
    }


def _prefix_validation(
    ens: StudentEnsemble, active: int, validate: Callable[[Any], float]
) -> Callable[[Any], float]:
    """`validate` of the sum of the ensemble's first `active` students, whatever model the
    stage trains (a student's view, or the ensemble)."""

    def run(_trained: Any) -> float:
        ens.active_students = active
        return validate(ens)

    return run


def distill_students(
    teacher: MuxSequenceClassifier,
    items: Sequence[Encoded],
    cfg: StudentConfig,
    tcfg: StudentTrainConfig | None = None,
    *,
    device: str | torch.device = "cpu",
    heldout: Sequence[Encoded] = (),
    stopping: StoppingRule | None = None,
    start: MuxSequenceClassifier | None = None,
) -> tuple[StudentEnsemble, dict]:
    """Distil `teacher` into K boosted students of `cfg.depth` layers. Returns the ensemble and
    stats: the residual MSE on the distillation set (and on `heldout`) after each student, before
    and after stacking, and the seconds spent. With `stopping`, each student's boosting and the
    stacking stop on the plateau of `stopping.validate` of the ensemble so far (the first j
    students; all K for stacking), their step counts the caps, and keep their best weights
    (``student_train[j]["stopping"]``, ``stacking_train["stopping"]``; see `StoppingRule`).
    The students' layers start from `start` (default: the teacher's), e.g. a pruned model."""
    tcfg = tcfg or StudentTrainConfig()
    if len(items) < tcfg.batch_size:
        raise ConfigError(
            f"the distillation set has {len(items)} examples, fewer than the batch size "
            f"({tcfg.batch_size}); lower the batch size or give more examples"
        )
    device = torch.device(device)
    t0 = time.perf_counter()
    torch.manual_seed(tcfg.seed)
    target = predict(teacher, items, device=device)  # (M, C)
    held_residual = predict(teacher, heldout, device=device) if heldout else None
    indexed = _indexed(items)
    start = teacher if start is None else start
    ens = StudentEnsemble.from_teacher(start, cfg, first_only=True).to(device)
    first_layers = student_first_layers(len(start.encoder.layers), cfg.k, cfg.depth, tcfg.init)
    residual = target.clone()
    stats: dict = {
        "distillation_examples": len(items),
        "residual_mse": [],
        "heldout_residual_mse": [],
        "student_seconds": [],
        "student_train": [],
    }
    for j in range(cfg.k):
        ts = time.perf_counter()
        if j > 0:
            ens.add_student(start, cfg.depth, first_layers[j])
        step_cfg = TrainConfig(
            steps=tcfg.steps_per_student,
            batch_size=tcfg.batch_size,
            lr=tcfg.lr if j == 0 or tcfg.later_lr is None else tcfg.later_lr,
            seed=tcfg.seed + j,
            trainer=tcfg.trainer,
            micro_batches=tcfg.micro_batches,
            stash=tcfg.stash,
            logit_loss=tcfg.loss,
            temperature=tcfg.temperature,
        )
        # "mse" regresses the residual itself; "kl" fits the sum so far plus this student
        mse = tcfg.loss == "mse"
        kw: dict[str, Any] = {
            "desc": f"student {j + 1}/{cfg.k}",
            "device": device,
            "logit_targets": residual if mse else target,
            "logit_offsets": None if mse else target - residual,
        }
        if stopping is None or stopping.validate is None:
            rule = stopping
        else:
            rule = replace(stopping, validate=_prefix_validation(ens, j + 1, stopping.validate))
        stats["student_train"].append(
            train_classifier(student_view(ens, j), indexed, step_cfg, **kw)
            if rule is None
            else rule.train(
                student_view(ens, j),
                indexed,
                step_cfg,
                what=f"student {j + 1}/{cfg.k}",
                cap_field="student_steps",
                **kw,
            )
        )
        ens.to(device)  # L2L leaves the student's weights in host memory
        # only student j is new: the earlier ones are fixed until stacking
        view = student_view(ens, j)
        residual = residual - predict(view, items, device=device)
        stats["residual_mse"].append(float(residual.pow(2).mean()))
        if held_residual is not None:
            held_residual = held_residual - predict(view, heldout, device=device)
            stats["heldout_residual_mse"].append(float(held_residual.pow(2).mean()))
        stats["student_seconds"].append(time.perf_counter() - ts)
    # residual after k students = teacher - (sum of the first k): the prefix errors already
    stats["prefix_mse_before_stacking"] = list(stats["residual_mse"])
    if tcfg.stacking_steps:
        stack_cfg = TrainConfig(
            steps=tcfg.stacking_steps,
            batch_size=tcfg.batch_size,
            lr=tcfg.stacking_lr,
            seed=tcfg.seed + cfg.k,
            logit_loss=tcfg.loss,
            temperature=tcfg.temperature,
        )
        stack_kw: dict[str, Any] = {
            "targets": target,
            "focus": tcfg.stacking_focus,
            "device": device,
        }
        if stopping is None:
            stats["stacking_train"] = _stack_steps(ens, indexed, stack_cfg, **stack_kw)
        else:
            if stopping.validate is not None:
                every = _prefix_validation(ens, cfg.k, stopping.validate)
                stopping = replace(stopping, validate=every)
            stats["stacking_train"] = stopping.train(
                ens,
                indexed,
                stack_cfg,
                what="stacking distillation",
                cap_field="student_stacking_steps",
                train_fn=_stack_steps,
                **stack_kw,
            )
    stats["prefix_mse"] = prefix_mse(ensemble_outputs(ens, items, device=device), target)
    stats["seconds"] = time.perf_counter() - t0
    ens.active_students = ens.k
    return ens.eval(), stats
