"""Checks of command-line input that run before any work starts: bad input raises an
AutoPruMuxError naming the flag and the value (the command exits 2 with its message)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from autoprumux._paths import create_problem, dir_problem, resolved
from autoprumux.errors import AutoPruMuxError


def _check_output_file(flag: str, value: str) -> None:
    """An output file named on the command line must be writable before the work starts: its
    directory exists and takes a new file (it is written beside, then renamed)."""
    p = Path(value).expanduser()
    if p.is_dir():
        raise AutoPruMuxError(f"{flag} {value!r} is a directory; name a file in it")
    parent = resolved(p).parent
    problem = dir_problem(parent) or create_problem(parent)
    if problem:
        raise AutoPruMuxError(f"{flag} {value!r}: {problem}")
    if p.exists() and not os.access(p, os.W_OK):
        raise AutoPruMuxError(f"{flag} {value!r} is not writable; choose another path")


def _check_cache_dir(value: str | None) -> None:
    """The artefact cache (--cache-dir, $AUTOPRUMUX_CACHE, or ./.autoprumux/cache) must be a
    directory this process can create and write, before any work starts."""
    from autoprumux._cache import default_cache_dir

    where = "--cache-dir" if value else "the cache directory ($AUTOPRUMUX_CACHE or the default)"
    root = Path(value).expanduser() if value else default_cache_dir()
    existing = next((p for p in (root, *root.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise AutoPruMuxError(
            f"{where} {str(root)!r}: {str(existing)!r} is a file, not a directory; "
            "choose another --cache-dir"
        )
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        raise AutoPruMuxError(
            f"{where} {str(root)!r} is not writable ({str(existing)!r} is read-only); "
            "pass a writable --cache-dir or set AUTOPRUMUX_CACHE"
        )


def _check_port(port: int) -> int:
    if not 1 <= port <= 65535:
        raise AutoPruMuxError(f"--port ({port}) must be between 1 and 65535 (e.g. 5000)")
    return port


def _warn_non_loopback(host: str) -> None:
    import ipaddress

    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        print(
            f"autoprumux: warning: --host {host} makes the server reachable from other machines; "
            "it has no authentication (the default 127.0.0.1 keeps it local)",
            file=sys.stderr,
        )


def _student_args(args: argparse.Namespace) -> tuple[int, int, int | None]:
    """(K, depth, active) from --students/--student-depth/--active, validated."""
    from autoprumux.models import StudentConfig

    def as_int(flag: str, v: str) -> int:
        try:
            return int(v)
        except ValueError:
            raise AutoPruMuxError(f"{flag} ({v!r}) must be an integer") from None

    cfg = StudentConfig(
        k=as_int("--students", args.students), depth=as_int("--student-depth", args.student_depth)
    )
    active = None if args.active is None else as_int("--active", args.active)
    if active is not None and not 1 <= active <= cfg.k:
        raise AutoPruMuxError(f"--active ({active}) must be between 1 and --students ({cfg.k})")
    return cfg.k, cfg.depth, active


def _mux_shape_args(args: argparse.Namespace, n: int) -> tuple[int, str]:
    """(mux_layers, mux_combiner) from --mux-layers/--mux-combiner (unset: 0 and binding),
    validated against N; the model's depth is checked once it is known (`_check_mux_layers_fit`)."""
    from autoprumux.config import MAX_MUX_LAYERS, MUX_COMBINERS

    raw = getattr(args, "mux_layers", None)
    combiner = getattr(args, "mux_combiner", None) or "binding"
    try:
        k = 0 if raw is None else int(str(raw))
    except ValueError:
        k = -1
    if not 0 <= k <= MAX_MUX_LAYERS:
        raise AutoPruMuxError(
            f"--mux-layers ({raw!r}) must be an integer from 0 to the model's layers - 1: the "
            "encoder layers run on each input before the N inputs are combined (0, the default, "
            "mixes the embeddings)"
        )
    if combiner not in MUX_COMBINERS:
        raise AutoPruMuxError(
            f"--mux-combiner ({combiner!r}) must be one of {list(MUX_COMBINERS)} (default: binding)"
        )
    if n == 1 and (k or combiner != "binding"):
        given = [
            f"--{f} {v}"
            for f, v, d in (("mux-layers", k, 0), ("mux-combiner", combiner, "binding"))
            if v != d
        ]
        raise AutoPruMuxError(
            f"{' and '.join(given)} apply to multiplexed models only (N > 1); give --mux 2 or "
            "more, or drop them"
        )
    return k, combiner


def _check_mux_layers_fit(k: int, model: str | None) -> None:
    """--mux-layers must leave the model at least one layer to run on the combined inputs (read
    from the model's config, before any training)."""
    if not k:
        return
    from autoprumux.models import resolve_model

    layers = resolve_model(model).config.num_layers
    if k >= layers:
        raise AutoPruMuxError(
            f"--mux-layers ({k}) must be below the model's {layers} encoder layers: at least one "
            f"runs on the combined inputs; use 0..{layers - 1}"
        )
