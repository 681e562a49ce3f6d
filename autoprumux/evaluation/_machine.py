"""Which machine and which code a measurement came from.

Speedups, and int8 accuracy, depend on the CPU generation and its int8 instructions, the number
of threads, the GPU and the library versions: s=0 int8 lost 0.57, 0.80 and 1.03 points on three
CPUs whose fp32 losses were identical. So every study and every trial records a `Machine`, a
study refuses to be resumed on another one, and figures from two machines are never averaged.
"""

from __future__ import annotations

import hashlib
import json
import platform
from dataclasses import asdict, dataclass
from typing import Any

from autoprumux._cpu import cpu_flags, cpuinfo

# the instruction-set extensions that change what int8 and fp32 matmuls cost
ISA_FLAGS = (
    "avx2",
    "fma",
    "avx512f",
    "avx512bw",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "amx_bf16",
    "amx_int8",
    "asimd",
    "asimddp",
    "sve",
)


@dataclass(frozen=True)
class Machine:
    """Where a measurement ran: the CPU (model name, family/model numbers, ISA flags), the
    threads torch uses, the GPU (CUDA devices only) and the versions of the code that measured."""

    cpu: str
    cpu_id: str  # "family F model M" on x86 Linux, else the architecture
    isa: tuple[str, ...]
    threads: int
    gpu: str | None
    torch: str
    autoprumux: str

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["isa"] = list(self.isa)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Machine:
        return cls(
            cpu=str(d["cpu"]),
            cpu_id=str(d["cpu_id"]),
            isa=tuple(str(f) for f in d["isa"]),
            threads=int(d["threads"]),
            gpu=None if d.get("gpu") is None else str(d["gpu"]),
            torch=str(d["torch"]),
            autoprumux=str(d["autoprumux"]),
        )

    @property
    def key(self) -> str:
        """A short stable identifier (12 hex digits) of everything above."""
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    def describe(self) -> str:
        """One line for reports: "<CPU> (<id>; <int8 flags>), <threads> threads[, <GPU>],
        torch <v>, autoprumux <v>"."""
        int8 = [f for f in self.isa if "vnni" in f or "amx" in f or f == "asimddp"]
        gpu = f", {self.gpu}" if self.gpu else ""
        return (
            f"{self.cpu} ({self.cpu_id}; {', '.join(int8) or 'no int8 dot-product'}), "
            f"{self.threads} threads{gpu}, torch {self.torch}, autoprumux {self.autoprumux}"
        )

    def differences(self, other: Machine) -> list[str]:
        """The fields in which `other` differs, as "field: mine -> other's"."""
        a, b = self.to_dict(), other.to_dict()
        return [f"{k}: {a[k]!r} -> {b[k]!r}" for k in a if a[k] != b[k]]


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("autoprumux")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def this_machine(device: str = "cpu") -> Machine:
    """The machine this process runs on, for measurements on `device` ("cpu" or "cuda[:i]")."""
    import torch

    info, flags = cpuinfo(), cpu_flags()
    if "cpu family" in info:
        cpu_id = f"family {info['cpu family']} model {info.get('model', '?')}"
    else:
        cpu_id = platform.machine() or "unknown"
    gpu = None
    if device.startswith("cuda") and torch.cuda.is_available():
        gpu = torch.cuda.get_device_name(torch.device(device))
    return Machine(
        cpu=info.get("model name") or platform.processor() or platform.machine() or "unknown",
        cpu_id=cpu_id,
        isa=tuple(f for f in ISA_FLAGS if f in flags),
        threads=torch.get_num_threads(),
        gpu=gpu,
        torch=torch.__version__,
        autoprumux=package_version(),
    )
