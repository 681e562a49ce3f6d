"""What this process's CPU reports of itself (/proc/cpuinfo): read once, shared by the int8
kernels' input range, the training loop's bf16 choice and the machine record of measurements."""

from __future__ import annotations

import functools
from pathlib import Path


@functools.cache
def cpuinfo() -> dict[str, str]:
    """The first processor's fields ("model name", "flags", ...); empty where unreadable."""
    info: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return info


def cpu_flags() -> frozenset[str]:
    """The CPU's ISA flags (x86 "flags", Arm "Features")."""
    info = cpuinfo()
    return frozenset((info.get("flags") or info.get("Features") or "").split())


# bf16 matrix instructions: where oneDNN runs a bf16 matmul faster than an fp32 one
BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


def has_bf16_matmul() -> bool:
    return bool(cpu_flags() & BF16_FLAGS)


# int8 dot-product instructions: where u8 x s8 products accumulate in int32 without the int16
# pair sums of AVX2, which saturate beyond 7-bit inputs
INT8_DOT_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})


def has_int8_dot() -> bool:
    return bool(cpu_flags() & INT8_DOT_FLAGS)
