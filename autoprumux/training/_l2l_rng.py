"""The L2L executor's randomness: one RNG stream per micro-batch, replayed in the recomputation.

Micro-batch m's forward draws its dropout masks from its own stream (a fresh generator state
seeded with the step's m-th seed); each stage records the state its output left, so the
backward relay recomputes every stage under exactly the state its forward ran with.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

# CPU generator state, and the CUDA generator state when the device is CUDA
RngState = tuple[torch.Tensor, torch.Tensor | None]


class MicroBatchStreams:
    """Generator states on `device` (the CPU's, plus the CUDA device's when it is CUDA)."""

    def __init__(self, device: torch.device):
        self.device = device
        self._cuda = device.type == "cuda"

    def current(self) -> RngState:
        cuda = torch.cuda.get_rng_state(self.device) if self._cuda else None
        return torch.get_rng_state(), cuda

    def seeded(self, seed: int) -> RngState:
        """The state of a fresh stream seeded with `seed` (what `torch.manual_seed` gives)."""
        cpu = torch.Generator().manual_seed(seed).get_state()
        cuda = None
        if self._cuda:
            cuda = torch.Generator(device=self.device).manual_seed(seed).get_state()
        return cpu, cuda

    @contextmanager
    def using(self, state: RngState) -> Iterator[None]:
        """Run under `state` (one micro-batch's stream); the global RNG is restored after."""
        with torch.random.fork_rng(devices=[self.device] if self._cuda else []):
            torch.set_rng_state(state[0])
            if state[1] is not None:
                torch.cuda.set_rng_state(state[1], self.device)
            yield
