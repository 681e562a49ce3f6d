"""Device-memory bookkeeping of the L2L executor (`L2LExecutor`).

`DeviceLedger` counts what the executor holds on the device: the loaded stage's parameters (and
buffers), its gradient, the stashed boundary activations and boundary gradients, the
micro-batches' inputs, and the tensors autograd saves while one stage recomputes one micro-batch
(counted by storage in a ``saved_tensors_hooks`` pack hook, `SavedBytes`; temporaries autograd
does not save are not counted). `DeviceCopies` makes and frees the device copies: they are real
separate tensors even on the CPU, so on a CPU run the ledger is the device-memory figure; on CUDA
compare it with ``torch.cuda.max_memory_allocated``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType

import torch
from torch import nn

LEDGER_KINDS = ("params", "grads", "stash", "work", "inputs")


def tensor_nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


class DeviceLedger:
    """Bytes the L2L executor holds on the training device, by kind, and the peak of their sum.

    Kinds: ``params`` (the loaded stage's working copy, buffers included), ``grads`` (its
    gradient), ``stash`` (boundary activations and gradients kept between stages, the teacher's
    outputs), ``work`` (what autograd saves while one stage recomputes one micro-batch) and
    ``inputs`` (the micro-batches' token ids, masks and labels).
    """

    def __init__(self) -> None:
        self.current: dict[str, int] = dict.fromkeys(LEDGER_KINDS, 0)
        self.peak = 0
        self.peak_by_kind: dict[str, int] = dict.fromkeys(LEDGER_KINDS, 0)

    @property
    def total(self) -> int:
        return sum(self.current.values())

    def add(self, kind: str, nbytes: int) -> None:
        self.current[kind] += nbytes
        self.peak_by_kind[kind] = max(self.peak_by_kind[kind], self.current[kind])
        self.peak = max(self.peak, self.total)

    def sub(self, kind: str, nbytes: int) -> None:
        self.current[kind] -= nbytes
        if self.current[kind] < 0:
            raise RuntimeError(f"L2L ledger: {kind} went negative ({self.current[kind]} bytes)")

    def reset_peak(self) -> None:
        self.peak = self.total
        self.peak_by_kind = dict(self.current)


@dataclass(frozen=True)
class L2LStats:
    """A snapshot of the executor's device-memory ledger (bytes)."""

    current_bytes: int
    peak_bytes: int
    peak_by_kind: dict[str, int] = field(default_factory=dict)


class SavedBytes:
    """Counts, by storage, the tensors autograd saves for backward (in the ledger's "work")."""

    def __init__(
        self, ledger: DeviceLedger, counted: Sequence[torch.Tensor], host: set[tuple[str, int]]
    ):
        self.ledger = ledger
        self.seen = {(str(t.device), t.untyped_storage().data_ptr()) for t in counted}
        self.host = host
        self.bytes = 0
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        key = (str(t.device), storage.data_ptr())
        if key in self.host:
            raise RuntimeError(
                f"an L2L stage computed with a host master tensor of shape {tuple(t.shape)}: "
                "its module is missing from the stage's tensors"
            )
        if key not in self.seen:
            self.seen.add(key)
            self.bytes += storage.nbytes()
            self.ledger.add("work", storage.nbytes())
        return t

    def __enter__(self) -> SavedBytes:
        self._hooks.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._hooks.__exit__(exc_type, exc, tb)

    def release(self) -> None:
        """After the backward: autograd has freed what it saved."""
        self.ledger.sub("work", self.bytes)
        self.bytes = 0


@dataclass
class Prefetch:
    """A stage's working copy whose host-to-device copies may still be in flight (on CUDA, on
    the copy stream until `event`); `DeviceCopies.ready` hands it to the compute stream."""

    tensors: dict[str, torch.Tensor]
    event: torch.cuda.Event | None = None


class DeviceCopies:
    """The executor's device copies besides the micro-batches, each counted in `ledger`: a loaded
    stage's working copy, and the boundary tensors kept between stages, on the device or (with
    ``stash="host"``) in host memory (pinned on CUDA).

    `prefetch` starts loading the next stage while the current one computes: on CUDA its copies
    are issued on a side stream (from pinned host memory, so they do not wait for the host), and
    `ready` makes the compute stream wait for them and marks the tensors as used by it (so the
    caching allocator does not hand their memory to the copy stream before the compute is done).
    On the CPU the copies are made at once. At most two stages' working copies are held: the one
    computing and the one arriving."""

    def __init__(self, ledger: DeviceLedger, device: torch.device, stash: str):
        self.ledger = ledger
        self.device = device
        self.on_device = stash == "device"
        self._cuda = device.type == "cuda"
        self._copy_stream = torch.cuda.Stream(device) if self._cuda else None

    def prefetch(
        self, tensors: Mapping[str, torch.Tensor], *, grads: bool, prefix: str = ""
    ) -> Prefetch:
        """Start the device copies of `tensors` (see `load`); `ready` waits for them."""
        if self._copy_stream is None:
            return Prefetch(self.load(tensors, grads=grads, prefix=prefix))
        with torch.cuda.stream(self._copy_stream):
            dev = self.load(tensors, grads=grads, prefix=prefix)
            event = torch.cuda.Event()
            event.record(self._copy_stream)
        return Prefetch(dev, event)

    def ready(self, pending: Prefetch) -> dict[str, torch.Tensor]:
        """The prefetched working copy, safe to compute with on the current stream."""
        if pending.event is not None:
            stream = torch.cuda.current_stream(self.device)
            stream.wait_event(pending.event)
            for t in pending.tensors.values():
                t.record_stream(stream)
        return pending.tensors

    def load(
        self, tensors: Mapping[str, torch.Tensor], *, grads: bool, prefix: str = ""
    ) -> dict[str, torch.Tensor]:
        """Device working copies of `tensors`, keys prefixed with `prefix`; with `grads`, those of
        trainable parameters require grad (their gradient is counted too)."""
        dev: dict[str, torch.Tensor] = {}
        for name, host in tensors.items():
            t = host.detach().to(self.device, copy=True, non_blocking=True)
            self.ledger.add("params", tensor_nbytes(t))
            if grads and isinstance(host, nn.Parameter) and host.requires_grad:
                t.requires_grad_()
                self.ledger.add("grads", tensor_nbytes(t))  # accumulated over the micro-batches
            dev[prefix + name] = t
        return dev

    def unload(self, dev: dict[str, torch.Tensor]) -> None:
        for t in dev.values():
            self.ledger.sub("params", tensor_nbytes(t))
            if t.requires_grad:
                self.ledger.sub("grads", tensor_nbytes(t))
        dev.clear()

    def stash(self, t: torch.Tensor) -> torch.Tensor:
        """Keep a boundary tensor just computed on the device: there, or copied to the host."""
        t = t.detach()
        if self.on_device:
            self.ledger.add("stash", tensor_nbytes(t))
            return t
        self.ledger.add("work", tensor_nbytes(t))  # on the device until the copy is made
        host = torch.empty(t.shape, dtype=t.dtype, pin_memory=self._cuda)
        host.copy_(t, non_blocking=True)
        self.ledger.sub("work", tensor_nbytes(t))
        return host

    def unstash(self, kept: torch.Tensor) -> torch.Tensor:
        """A device tensor to compute with (for a host stash, a fresh device copy)."""
        if self.on_device:
            return kept
        t = kept.to(self.device, copy=True, non_blocking=True)
        self.ledger.add("stash", tensor_nbytes(t))
        return t

    def done(self, kept: torch.Tensor, used: torch.Tensor, *, last: bool) -> None:
        """`used` (from `unstash`) is no longer needed; with `last`, neither is `kept`."""
        if not self.on_device:
            self.ledger.sub("stash", tensor_nbytes(used))
        elif last:
            self.ledger.sub("stash", tensor_nbytes(kept))
