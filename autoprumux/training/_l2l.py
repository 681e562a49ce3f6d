"""L2L: layer-to-layer relay training with constant device memory (Pudipeddi et al. 2020).

The model's fp32 master parameters, their gradients and the AdamW state stay in host memory
(pinned when the device is CUDA). The model is cut into stages:

    stage 0        embeddings (+ for N > 1: index embeddings, padding mask, multiplexer)
    stage 1 .. L   one stage per encoder layer
    stage L + 1    head: (N > 1: demultiplexer), pooler, classifier, (retrieval head), the loss

One training step on a mini-batch of B examples:

1. The batch is split into M micro-batches of B / M examples.
2. Forward relay: for each stage but the last, in order, its parameters are copied to the
   device, it runs over all M micro-batches without autograd, each output (the next stage's
   input, the "boundary activation") is stashed on the device or in host memory, and the stage's
   device copy is freed.
3. Backward relay: for each stage in reverse, its parameters are copied to the device again;
   per micro-batch its forward is recomputed from the stashed input with autograd, under the same
   RNG state as in the forward (so dropout draws the same masks), and the gradient that came
   down from the stage above is back-propagated (the last stage computes loss_m / M instead:
   the sum over micro-batches is the mini-batch mean). Parameter gradients accumulate over the
   micro-batches on the device; the input gradients go down to the next stage. Then the stage's
   gradients are copied to the host and its device copy is freed, and its AdamW step runs on the
   host in a worker thread while the device recomputes the stages below.

The result equals gradient accumulation over the same micro-batches (sum of loss_m / M, one
AdamW step) when micro-batch m's forward draws its randomness from its own stream: at each step
the executor draws M seeds, ``torch.randint(2**62, (M,))``, from the global generator, and the
dropout of micro-batch m in every stage continues the stream seeded by ``seeds[m]``. The
retrieval term samples its positions from one generator seeded by ``cfg.seed``, micro-batch after
micro-batch, as the standard loop does batch after batch.

Parameters used by two stages (the word-embedding matrix: stage 0 looks tokens up, the retrieval
head decodes with it) are "owned" by the lowest stage that uses it: the gradient of the upper
stage is added on the host and the step runs only when the owner's backward has completed it.
Frozen parameters (``requires_grad`` False) are copied to the device but get no gradient, no
optimizer state and no step. One AdamW per stage, with the standard loop's groups (no weight
decay for biases and LayerNorms) and LR schedule, equals one AdamW over all parameters.

Overlap. While a stage computes, the next stage's parameters are already being copied to the
device (`DeviceCopies.prefetch`: on CUDA a side stream copying from pinned host memory; the
compute stream waits for it only when the stage starts), so the device holds at most two
stages' working copies. The gradients go back to pinned host buffers without blocking the
host, and each stage's AdamW step runs in a worker thread, once its gradient copies have
landed, while the device computes the stages below.

Gradient clipping (``TrainConfig.grad_clip > 0``): the standard loop clips the global norm,
which needs every gradient before any step. ``l2l_clip="global"`` (the default) does exactly
that: the host steps wait until the whole backward relay is done, then the global norm is
clipped (with the same ``clip_grad_norm_``) and the stages step, without the overlap.
``l2l_clip="stage"`` clips each stage's own gradient norm to ``grad_clip`` (a weaker bound: the
global norm can reach grad_clip * sqrt(stages)) and keeps the overlap. ``l2l_clip="previous"``
keeps the overlap and the global bound's scale: every stage's gradient is multiplied by
``min(1, grad_clip / n)``, where n is the previous step's global norm (each host step adds its
stage's squared norm; the first step clips exactly, as "global"). It equals "global" whenever
neither step's norm is over ``grad_clip``. With ``grad_clip=0`` nothing is clipped and the steps
always overlap.

What the executor holds on the device is counted by a `DeviceLedger` (`_l2l_memory`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import torch
from torch import nn

from autoprumux.config import validate_trainer
from autoprumux.errors import ConfigError
from autoprumux.models import MuxSequenceClassifier
from autoprumux.models._mux import MuxLayout
from autoprumux.training._config import TrainConfig, lr_schedule, param_groups
from autoprumux.training._l2l_memory import (
    DeviceCopies,
    DeviceLedger,
    L2LStats,
    Prefetch,
    SavedBytes,
    tensor_nbytes,
)
from autoprumux.training._l2l_rng import MicroBatchStreams, RngState
from autoprumux.training._losses import classifier_loss


@dataclass
class _Inputs:
    """One micro-batch on the device and its mux layout (what the stages read besides weights)."""

    batch: dict[str, torch.Tensor]  # input_ids, attention_mask, token_type_ids, labels (b, L)
    lay: MuxLayout

    def tensors(self) -> list[torch.Tensor]:
        return [*self.batch.values(), *self.lay.tensors()]


def _inputs(model: MuxSequenceClassifier, batch: dict[str, torch.Tensor]) -> _Inputs:
    lay = model.layout(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    return _Inputs(batch, lay)


class _Runner(nn.Module):
    """Calls a stage function on the model with the stage's device tensors swapped in."""

    def __init__(self, model: MuxSequenceClassifier):
        super().__init__()
        self.model = model

    def forward(self, fn: Callable[..., Any], *args: Any) -> Any:
        return fn(self.model, *args)


# fn(model, inputs of the micro-batch, stage input (None for stage 0), micro-batch index)
_StageFn = Callable[[MuxSequenceClassifier, _Inputs, torch.Tensor | None, int], Any]


@dataclass
class _Stage:
    name: str
    fn: _StageFn
    tensors: dict[str, torch.Tensor]  # the host master parameters and buffers it reads, by name
    runner: _Runner
    owned: list[str] = field(default_factory=list)  # trainable parameters it steps
    optimizer: torch.optim.Optimizer | None = None
    scheduler: torch.optim.lr_scheduler.LambdaLR | None = None


def _host_tensors(
    model: nn.Module, prefixes: Sequence[str], names: Sequence[str] = ()
) -> dict[str, torch.Tensor]:
    """The model's parameters and buffers under `prefixes` (submodule names), plus `names`."""
    out = {}
    for name, t in [*model.named_parameters(), *model.named_buffers()]:
        if name in names or any(name.startswith(p + ".") for p in prefixes):
            out[name] = t
    return out


def _check_model(model: object, role: str) -> MuxSequenceClassifier:
    layers = getattr(getattr(model, "encoder", None), "layers", None)
    if not isinstance(model, MuxSequenceClassifier) or not isinstance(layers, nn.ModuleList):
        raise ConfigError(
            f"the L2L trainer needs the {role} to be a MuxSequenceClassifier whose encoder has a "
            f"list of layers (encoder.layers, an nn.ModuleList); got {type(model).__name__} "
            f"with encoder.layers of type {type(layers).__name__}; use trainer='standard'"
        )
    if model.n > 1 and model.instance_layers:
        raise ConfigError(
            f"the L2L trainer relays one layer over the combined rows; this {role} runs its first "
            f"{model.instance_layers} layers per instance (mux_layers > 0); use trainer='standard'"
        )
    return model


class L2LExecutor:
    """Layer-to-layer relay trainer for a `MuxSequenceClassifier` (see the module docstring).

    ``with L2LExecutor(model, cfg, device="cuda") as ex: loss = ex.step(batch)`` runs one
    training step (the relay, then every stage's host AdamW step) on a collated batch of
    ``cfg.batch_size`` examples and returns its loss (the mean over the mini-batch). The model
    (and the teacher) are moved to host memory and stay there; ``ex.stats`` is the device ledger.
    """

    def __init__(
        self,
        model: MuxSequenceClassifier,
        cfg: TrainConfig,
        *,
        device: str | torch.device = "cpu",
        teacher: MuxSequenceClassifier | None = None,
        special_ids: Sequence[int] = (),
    ):
        self.model = _check_model(model, "model")
        if teacher is not None:
            _check_model(teacher, "teacher")
        validate_trainer("l2l", cfg.micro_batches, cfg.stash, cfg.batch_size)
        if (cfg.distill_weight > 0 or cfg.hidden_distill_weight > 0) and teacher is None:
            raise ConfigError("distill_weight / hidden_distill_weight > 0 need a teacher model")
        self.cfg = cfg
        self.device = torch.device(device)
        self._cuda = self.device.type == "cuda"
        if self._cuda and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        self.special_ids = tuple(special_ids)
        self.ledger = DeviceLedger()
        self._rng = MicroBatchStreams(self.device)
        self._copies = DeviceCopies(self.ledger, self.device, cfg.stash)
        self._use_retrieval = cfg.retrieval_weight > 0 and model.n > 1
        self._use_hidden = cfg.hidden_distill_weight > 0
        self.teacher = (
            teacher
            if teacher is not None and (cfg.distill_weight > 0 or self._use_hidden)
            else None
        )
        self._to_host(model).train()
        if self.teacher is not None:
            self._to_host(self.teacher).eval()
        self._gen = torch.Generator().manual_seed(cfg.seed)  # retrieval position sampling
        self.stages = self._build_stages(model, teacher=False)
        self.teacher_stages = (
            self._build_stages(self.teacher, teacher=True) if self.teacher is not None else []
        )
        self._host_ptrs = {
            (str(t.device), t.untyped_storage().data_ptr())
            for stage in [*self.stages, *self.teacher_stages]
            for t in stage.tensors.values()
        }
        self._trainable: list[nn.Parameter] = []
        self._setup_optimizers()
        self._grad_buffers: dict[str, torch.Tensor] = {}  # host gradients (pinned on CUDA)
        # the teacher's outputs for the micro-batch the head is computing (device tensors)
        self._teacher_now: tuple[torch.Tensor, ...] = ()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="l2l-optim")
        # l2l_clip="previous": the last step's global gradient norm, and this step's per stage
        self.previous_norm: float | None = None
        self._squared_norms: list[float] = []

    # ---- set-up ----------------------------------------------------------------------------
    def _to_host(self, model: MuxSequenceClassifier) -> MuxSequenceClassifier:
        model.to("cpu")
        if self._cuda:  # pinned host memory: asynchronous copies to and from the device
            for t in [*model.parameters(), *model.buffers()]:
                if not t.is_pinned():
                    t.data = t.data.pin_memory()
        return model

    def _build_stages(self, model: MuxSequenceClassifier, *, teacher: bool) -> list[_Stage]:
        runner = _Runner(model)
        mux = ["index_embeddings", "multiplexer"] if model.n > 1 else []
        first = _host_tensors(
            model, ["encoder.embeddings", *mux], ["_prefix_index"] if model.n > 1 else []
        )
        stages = [_Stage("embeddings", self._stage0, first, runner)]
        for i in range(len(model.encoder.layers)):
            stages.append(
                _Stage(
                    f"layer {i}",
                    self._layer_fn(i),
                    _host_tensors(model, [f"encoder.layers.{i}"]),
                    runner,
                )
            )
        head = ["encoder.pooler", "classifier", *(["demux"] if model.n > 1 else [])]
        shared: list[str] = []
        if not teacher and self._use_retrieval:
            head.append("retrieval_head")
            shared.append("encoder.embeddings.word.weight")  # the tied decoder
        fn = self._teacher_head if teacher else self._loss_head
        stages.append(_Stage("head", fn, _host_tensors(model, head, shared), runner))
        return stages

    def _setup_optimizers(self) -> None:
        owner: dict[str, int] = {}
        for i, stage in enumerate(self.stages):  # the lowest stage using a parameter owns it
            for name, t in stage.tensors.items():
                if isinstance(t, nn.Parameter) and t.requires_grad:
                    owner[name] = min(owner.get(name, i), i)
        for i, stage in enumerate(self.stages):
            named = [
                (name, p)
                for name, s in owner.items()
                if s == i and isinstance(p := stage.tensors[name], nn.Parameter)
            ]
            stage.owned = [name for name, _ in named]
            if not named:
                continue
            groups = [g for g in param_groups(named, self.cfg) if g["params"]]
            stage.optimizer = torch.optim.AdamW(groups, lr=self.cfg.lr)
            stage.scheduler = torch.optim.lr_scheduler.LambdaLR(
                stage.optimizer, lr_schedule(self.cfg)
            )
            self._trainable += [p for _, p in named]

    # ---- stage functions -------------------------------------------------------------------
    @staticmethod
    def _stage0(
        model: MuxSequenceClassifier, inp: _Inputs, x: torch.Tensor | None, m: int
    ) -> torch.Tensor:
        return model.embed(inp.lay)

    @staticmethod
    def _layer_fn(i: int) -> _StageFn:
        def run(
            model: MuxSequenceClassifier, inp: _Inputs, x: torch.Tensor | None, m: int
        ) -> torch.Tensor:
            return model.encoder.layers[i](x, inp.lay.bias)

        return run

    @staticmethod
    def _positions(model: MuxSequenceClassifier, states_needed: bool) -> str:
        """What the head reads: all token states, or only the [CLS] state (as `forward`)."""
        return "all" if states_needed or model.mux_config.pooling == "mean" else "cls"

    def _teacher_head(
        self, model: MuxSequenceClassifier, inp: _Inputs, h: torch.Tensor | None, m: int
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        assert h is not None
        positions = self._positions(model, self._use_hidden)
        states = model.readout(inp.lay, h, positions)
        mask = inp.batch["attention_mask"]
        logits = (
            model.logits_from_states(states, mask) if positions == "all" else model.head(states)
        )
        return logits, states if self._use_hidden else None

    def _loss_head(
        self, model: MuxSequenceClassifier, inp: _Inputs, h: torch.Tensor | None, m: int
    ) -> torch.Tensor:
        assert h is not None
        positions = self._positions(model, self._use_retrieval or self._use_hidden)
        states = model.readout(inp.lay, h, positions)
        mask = inp.batch["attention_mask"]
        logits = (
            model.logits_from_states(states, mask) if positions == "all" else model.head(states)
        )
        t_logits = self._teacher_now[0] if self._teacher_now else None
        t_states = self._teacher_now[1] if len(self._teacher_now) > 1 else None
        return classifier_loss(
            model,
            inp.batch,
            self.cfg,
            logits=logits,
            states=states if positions == "all" else None,
            teacher_logits=t_logits,
            teacher_states=t_states,
            special_ids=self.special_ids,
            generator=self._gen,
        )

    # ---- device residency ------------------------------------------------------------------
    def _prefetch(self, stage: _Stage, *, grads: bool) -> Prefetch:
        """Start the device working copies of the stage's parameters and buffers (keys for the
        runner); `DeviceCopies.ready` hands them over when the stage starts."""
        return self._copies.prefetch(stage.tensors, grads=grads, prefix="model.")

    # ---- the relay -------------------------------------------------------------------------
    def _run(
        self,
        stage: _Stage,
        dev: dict[str, torch.Tensor],
        inp: _Inputs,
        x: torch.Tensor | None,
        m: int,
    ) -> Any:
        return torch.func.functional_call(stage.runner, dev, (stage.fn, inp, x, m), strict=False)

    def _teacher_outputs(self, inputs: list[_Inputs]) -> list[tuple[torch.Tensor, ...]]:
        """Forward-only relay of the teacher (no grad): its logits (and states) per micro-batch."""
        kept: list[Any] = [None] * len(inputs)
        stages = self.teacher_stages
        nxt = self._prefetch(stages[0], grads=False)
        for s, stage in enumerate(stages):
            dev = self._copies.ready(nxt)
            if s + 1 < len(stages):
                nxt = self._prefetch(stages[s + 1], grads=False)
            for m, inp in enumerate(inputs):
                x = self._copies.unstash(kept[m]) if s else None
                with torch.no_grad():
                    out = self._run(stage, dev, inp, x, m)
                if x is not None:
                    self._copies.done(kept[m], x, last=True)
                if isinstance(out, tuple):  # the head: logits, states or None
                    kept[m] = tuple(self._copies.stash(t) for t in out if t is not None)
                else:
                    kept[m] = self._copies.stash(out)
            self._copies.unload(dev)
        return kept

    def _offload_grads(self, stage: _Stage, dev: dict[str, torch.Tensor], done: set[str]) -> None:
        """Add the stage's device gradients into the host buffers (`done`: names already there)."""
        for name in stage.tensors:
            g = dev["model." + name].grad
            if g is None:
                continue
            buf = self._grad_buffers.get(name)
            if buf is None:
                buf = torch.empty(g.shape, dtype=g.dtype, pin_memory=self._cuda)
                self._grad_buffers[name] = buf
            if name in done:  # a shared parameter: a stage above already gave its part
                buf.add_(g.to("cpu"))
            else:
                buf.copy_(g, non_blocking=True)
                done.add(name)

    def _host_step(self, stage: _Stage, ready: torch.cuda.Event | None, clip: str | None) -> None:
        """The stage's AdamW step on the host (runs in the worker thread); `clip`: None (no
        clipping, or already clipped), "stage" or "previous" (see the module docstring)."""
        assert stage.optimizer is not None and stage.scheduler is not None
        if ready is not None:
            ready.synchronize()  # the gradient copies from the device have landed
        params = [stage.tensors[n] for n in stage.owned]
        if clip == "stage":
            torch.nn.utils.clip_grad_norm_(params, self.cfg.grad_clip)
        elif clip == "previous":
            grads = [p.grad for p in params if p.grad is not None]
            self._squared_norms.append(float(sum(g.pow(2).sum() for g in grads)))
            assert self.previous_norm is not None
            scale = self.cfg.grad_clip / (self.previous_norm + 1e-6)
            if scale < 1.0:
                torch._foreach_mul_(grads, scale)
        stage.optimizer.step()
        stage.scheduler.step()

    def _split(self, batch: dict[str, torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        b, m = batch["input_ids"].shape[0], self.cfg.micro_batches
        if b % m:
            raise ConfigError(
                f"batch size ({b}) must be a multiple of the L2L micro-batch count ({m}); "
                "choose a divisor of the batch size as micro_batches"
            )
        size = b // m
        return [
            {
                k: v[i * size : (i + 1) * size].to(self.device, copy=True, non_blocking=True)
                for k, v in batch.items()
            }
            for i in range(m)
        ]

    def step(self, batch: dict[str, torch.Tensor]) -> float:
        """One training step on a collated batch; returns the loss (mean over the batch)."""
        cfg = self.cfg
        micro = self._split(batch)
        inputs = [_inputs(self.model, mb) for mb in micro]
        teacher_inputs = [_inputs(self.teacher, mb) for mb in micro] if self.teacher else []
        storages = {
            (str(t.device), t.untyped_storage().data_ptr()): t.untyped_storage().nbytes()
            for inp in inputs + teacher_inputs
            for t in inp.tensors()
        }
        held = sum(storages.values())
        self.ledger.add("inputs", held)
        teacher_out = self._teacher_outputs(teacher_inputs) if self.teacher else []
        seeds = torch.randint(2**62, (len(micro),)).tolist()  # one dropout stream per micro-batch
        for p in self._trainable:
            p.grad = None
        pending: list[Future[None]] = []
        clip = self._clip_mode()
        self._squared_norms = []
        try:
            loss = self._relay(
                inputs, [self._rng.seeded(s) for s in seeds], teacher_out, pending, clip
            )
            if clip == "global":
                # nothing has stepped yet and every gradient is on the host: clip the global norm
                if self._cuda:
                    torch.cuda.synchronize(self.device)
                norm = torch.nn.utils.clip_grad_norm_(self._trainable, cfg.grad_clip)
                self._squared_norms = [float(norm) ** 2]
                pending += [
                    self._pool.submit(self._host_step, st, None, None)
                    for st in self.stages
                    if st.optimizer is not None
                ]
        finally:
            for f in pending:
                f.result()
        if cfg.grad_clip > 0 and cfg.l2l_clip == "previous":
            self.previous_norm = sum(self._squared_norms) ** 0.5
        self.ledger.sub("inputs", held)
        return loss

    def _clip_mode(self) -> str | None:
        """How this step clips: "global" (after the whole backward), "stage" or "previous" (in
        each stage's overlapped host step), or None."""
        cfg = self.cfg
        if cfg.grad_clip <= 0:
            return None
        if cfg.l2l_clip == "previous" and self.previous_norm is None:
            return "global"  # the first step has no previous norm: clip it exactly
        return cfg.l2l_clip

    def _relay(
        self,
        inputs: list[_Inputs],
        streams: list[RngState],
        teacher_out: list[tuple[torch.Tensor, ...]],
        pending: list[Future[None]],
        clip: str | None,
    ) -> float:
        """Forward then backward relay over the stages; submits the host steps to `pending`
        (all of them after the relay instead when `clip` is "global").

        streams[m]: the RNG state micro-batch m starts from; teacher_out[m]: the teacher's
        stashed outputs for it (empty without a teacher)."""
        stages, mb = self.stages, len(inputs)
        last = len(stages) - 1
        # kept[s][m]: the input of stage s for micro-batch m (s >= 1); rng[s][m]: its RNG state
        kept: list[list[Any]] = [[None] * mb for _ in stages]
        rng: list[list[RngState]] = [list(streams)] + [[] for _ in range(last)]
        nxt = self._prefetch(stages[0], grads=False)
        for s in range(last):
            dev = self._copies.ready(nxt)
            # the next stage arrives while this one computes (the head comes with gradients:
            # it starts the backward relay)
            nxt = self._prefetch(stages[s + 1], grads=s + 1 == last)
            for m, inp in enumerate(inputs):
                x = self._copies.unstash(kept[s][m]) if s else None
                with torch.no_grad(), self._rng.using(rng[s][m]):
                    out = self._run(stages[s], dev, inp, x, m)
                    rng[s + 1].append(self._rng.current())
                if x is not None:
                    self._copies.done(kept[s][m], x, last=False)
                kept[s + 1][m] = self._copies.stash(out)
                del out
            self._copies.unload(dev)

        grads_in: list[Any] = [None] * mb  # gradient w.r.t. the output of the current stage
        done: set[str] = set()
        total = 0.0
        for s in range(last, -1, -1):
            stage = stages[s]
            dev = self._copies.ready(nxt)
            if s:
                nxt = self._prefetch(stages[s - 1], grads=True)
            for m, inp in enumerate(inputs):
                x = self._copies.unstash(kept[s][m]).detach().requires_grad_() if s else None
                if s == last and teacher_out:
                    self._teacher_now = tuple(self._copies.unstash(t) for t in teacher_out[m])
                counted = [*dev.values(), *inp.tensors(), *([x] if x is not None else [])]
                with (
                    self._rng.using(rng[s][m]),
                    SavedBytes(self.ledger, counted, self._host_ptrs) as sb,
                ):
                    out = self._run(stage, dev, inp, x, m)
                if x is not None:  # x.grad appears during the backward
                    self.ledger.add("work", tensor_nbytes(x))
                if s == last:
                    total += float(out.detach())
                    (out / mb).backward()
                    for kept_t, used in zip(
                        teacher_out[m] if teacher_out else (), self._teacher_now, strict=True
                    ):
                        self._copies.done(kept_t, used, last=True)
                    self._teacher_now = ()
                else:
                    g = self._copies.unstash(grads_in[m])
                    if out.requires_grad:  # False only for a fully frozen stage 0
                        out.backward(g)
                    self._copies.done(grads_in[m], g, last=True)
                sb.release()
                del out
                if x is not None:
                    assert x.grad is not None
                    self.ledger.sub("work", tensor_nbytes(x))
                    grads_in[m] = self._copies.stash(x.grad)
                    x.grad = None
                    self._copies.done(kept[s][m], x, last=True)
                    kept[s][m] = None
            self._offload_grads(stage, dev, done)
            self._copies.unload(dev)
            ready = None
            if self._cuda:
                ready = torch.cuda.Event()
                ready.record(torch.cuda.current_stream(self.device))
            for name in stage.owned:  # complete: every stage using it is done
                if name in done:
                    stage.tensors[name].grad = self._grad_buffers[name]
            if clip != "global" and stage.optimizer is not None:
                pending.append(self._pool.submit(self._host_step, stage, ready, clip))
        return total / mb

    # ---- public ----------------------------------------------------------------------------
    @property
    def stats(self) -> L2LStats:
        return L2LStats(
            current_bytes=self.ledger.total,
            peak_bytes=self.ledger.peak,
            peak_by_kind=dict(self.ledger.peak_by_kind),
        )

    def close(self) -> None:
        """Stop the optimizer worker thread."""
        self._pool.shutdown(wait=True)

    def __enter__(self) -> L2LExecutor:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
