"""Start-up of an exported directory: fresh interpreters each run `import autoprumux;
autoprumux.load(DIR)` (timed), then one prediction, and record whether torch was imported (an
ONNX or OpenVINO export must not import it).

    python benchmarks/export_startup.py DIR [--runs 5] [--out benchmarks/results/export_startup_cpu.json]

For example DIR = the main job's `sst2-model` (an OpenVINO export when its answer is ov-int8).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from _results import machine, write_json
from onnx_runtime import startup


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("directory", type=Path)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--out", default="benchmarks/results/export_startup_cpu.json")
    args = ap.parse_args(argv)
    from autoprumux.deploy import read_manifest

    manifest = read_manifest(args.directory)
    doc = {
        "machine": machine(),
        "directory": str(args.directory),
        "model_format": manifest.model_format,
        "config": manifest.config.describe(),
        **startup(args.directory.resolve(), args.runs, None),
    }
    write_json(args.out, doc)
    print(
        f"{manifest.model_format} export ({doc['config']}): import + load "
        f"{doc['median_import_load_s']:.2f} s, first predict {doc['median_predict_s']:.2f} s "
        f"(median of {args.runs}); torch imported: {doc['torch_imported']}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
