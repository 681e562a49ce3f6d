"""The teacher's per-layer token states over a training set, written once to disk and read per
batch, so a layer-distilling step does not run the teacher.

Each encoder layer's output for every item is one fp16 `.npy` file of shape (M, T, H), T the
longest item, opened memory-mapped: a step reads only its batch's rows (about 50 KB per item and
layer at T=64, H=384), and the whole table never has to fit in memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from autoprumux.data import Encoded, collate
from autoprumux.models import MuxSequenceClassifier


def layer_file(directory: Path, layer: int) -> Path:
    return directory / f"layer{layer}.npy"


@torch.no_grad()
def write_teacher_layers(
    teacher: MuxSequenceClassifier,
    items: Sequence[Encoded],
    directory: Path,
    *,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
) -> dict[str, int]:
    """Run `teacher` (N=1) once over `items` and write each encoder layer's token states (see
    the module doc). Returns the table's shape and size in bytes."""
    if teacher.n != 1:
        raise ValueError("teacher layer states are per instance only for N=1 teachers")
    length = max(len(it.input_ids) for it in items)
    hidden = teacher.encoder.config.hidden_size
    n_layers = len(teacher.encoder.layers)
    files = [
        np.lib.format.open_memmap(
            layer_file(directory, i),
            mode="w+",
            dtype=np.float16,
            shape=(len(items), length, hidden),
        )
        for i in range(n_layers)
    ]
    teacher.to(device).eval()
    for start in range(0, len(items), batch_size):
        b = collate(items[start : start + batch_size], pad_to=length)
        layers: list[torch.Tensor] = []
        teacher.hidden_states(
            b["input_ids"].to(device),
            b["attention_mask"].to(device),
            b["token_type_ids"].to(device),
            positions="all",
            layers=layers,
        )
        for out, states in zip(files, layers, strict=True):
            out[start : start + len(b["input_ids"])] = states.half().cpu().numpy()
    for out in files:
        out.flush()
    return {
        "items": len(items),
        "layers": n_layers,
        "length": length,
        "bytes": sum(layer_file(directory, i).stat().st_size for i in range(n_layers)),
    }


class TeacherLayers:
    """The table `write_teacher_layers` wrote, memory-mapped."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self._layers: list[np.ndarray] = []
        while layer_file(self.directory, len(self._layers)).is_file():
            self._layers.append(
                np.load(layer_file(self.directory, len(self._layers)), mmap_mode="r")
            )
        if not self._layers:
            raise FileNotFoundError(f"no teacher layer states in {self.directory}")

    def __len__(self) -> int:
        return int(self._layers[0].shape[0])

    @property
    def num_layers(self) -> int:
        return len(self._layers)

    def batch(
        self, index: torch.Tensor, length: int, device: str | torch.device
    ) -> list[torch.Tensor]:
        """Each layer's states (B, length, H) in fp32 for the items at `index`, in that order (a
        batch is padded to its own longest item, at most the table's)."""
        rows = index.cpu().numpy()
        return [
            torch.from_numpy(np.ascontiguousarray(layer[rows, :length])).to(device, torch.float32)
            for layer in self._layers
        ]
