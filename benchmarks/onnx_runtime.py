"""ONNX Runtime beside torch for a deployed classifier (issue 41): the ONNX export's labels and
accuracy, its start-up without torch, its throughput, and ONNX Runtime's static int8.

    python benchmarks/onnx_runtime.py --task sst2 --sparsities 0 0.5 --cache-dir CACHE \
        [--preset quick] [--recipe FIELD=VALUE ...] [--threads 2] [--batch 64] [--seq-len 128] [--repeats 10]

For each sparsity s, the N=1 fp32 model `Candidate(sparsity=s)` of the packaged MiniLM is built
(or taken from --cache-dir) by the pipeline with the --preset recipe (quick: the baseline short
of its plateau, pruned models from its pruning path) and exported twice with `export_model`:
`--format onnx` and `--format torch`. Then, on this CPU:

1. Agreement and accuracy: both directories are loaded with `autoprumux.load` and label the
   whole dev set; reported are the share of dev labels on which the ONNX export agrees with the
   torch export, their largest logit difference, and each one's dev accuracy beside the
   accuracy `evaluate` measured (the manifest's `measurement.accuracy`).
2. Start-up: in --startup-runs fresh interpreters each, `import autoprumux;
   p = autoprumux.load(DIR)` is timed, then one `predict` of one sentence, and whether torch was
   imported is recorded (the ONNX export must not import it); median of the runs.
3. Throughput: ONNX Runtime fp32 (the loaded export's own session, --threads intra-op threads)
   beside the torch fp32 model (the torch export loaded, torch on --threads threads), at
   --batch x --seq-len (examples per second) and at batch 1 x --seq-len (latency), on dev
   sentences padded to --seq-len, interleaved rounds (`evaluation.time_interleaved`), median.
4. ONNX Runtime static int8: `quantize_static` (QDQ, per-channel int8 weights, uint8
   activations, MinMax ranges) of the exported graph after `quant_pre_process`, calibrated on
   --calibration training sentences (never dev), tokenised by the export's own tokenizer and
   padding (`data.encode`, `data.pad`) in length-sorted batches of 32. On a CPU without an int8
   dot-product instruction (VNNI), weights are quantized to 7 bits (`reduce_range`), as ONNX
   Runtime advises for that case (and as the project's own int8 keeps its activations to 7
   bits there). By default only the linear layers (MatMul / Gemm with a constant weight) are
   quantized, as the torch int8 does; `--ort-ops all` quantizes every operator ONNX Runtime's
   QDQ quantizer supports. Its dev accuracy and agreement with the fp32 export are reported,
   and it is timed in the same rounds as the three above, beside the torch static int8 (the
   torch export loaded with precision="int8": its stored calibration of 512 training texts).

5. OpenVINO, where it and NNCF are installed (`pip install openvino nncf`; not an extra of the
   project): the exported graph in OpenVINO's fp32 runtime and its static int8 (NNCF
   `quantize`, transformer preset, the same calibration feeds), labelled and timed in the same
   rounds as the others.

Results: benchmarks/results/onnx_runtime_<task>_cpu.json (or --out), and a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _results import RECIPE_HELP, machine, recipe_overrides, write_json

from autoprumux._cpu import has_int8_dot
from autoprumux.config import openvino_cpu_settings
from autoprumux.deploy._onnx import cpu_session

ROOT = Path(__file__).resolve().parents[1]
SENTENCE = "a gripping, beautifully acted film that never lets go"
CALIBRATION_BATCH = 32
# what a fresh interpreter runs for the start-up figure: import and load timed together, then
# one prediction; torch's presence after load and after predict
STARTUP = """
import json, sys, time
t0 = time.perf_counter()
import autoprumux
p = autoprumux.load(sys.argv[1])
t1 = time.perf_counter()
after_load = "torch" in sys.modules
label = p.predict([sys.argv[2]]).labels[0]
t2 = time.perf_counter()
print(json.dumps({"import_load_s": t1 - t0, "predict_s": t2 - t1, "label": label,
                  "torch_after_load": after_load, "torch_after_predict": "torch" in sys.modules}))
"""


def wait_while(flag: str | None) -> None:
    """Sleep while `flag` (a file) exists: a shared machine's 'someone is timing' marker."""
    if not flag:
        return
    announced = False
    while Path(flag).exists():
        if not announced:
            print(f"waiting while {flag} exists", file=sys.stderr, flush=True)
            announced = True
        time.sleep(30)


def startup(directory: Path, runs: int, flag: str | None) -> dict[str, Any]:
    """`runs` fresh interpreters each loading `directory` and predicting one sentence."""
    wait_while(flag)
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-c", STARTUP, str(directory), SENTENCE],
            capture_output=True,
            text=True,
            cwd=ROOT,
            check=False,
        )
        wall = time.perf_counter() - t
        if done.returncode != 0:
            raise RuntimeError(f"start-up run failed: {done.stderr.strip()[-2000:]}")
        row = json.loads(done.stdout.strip().splitlines()[-1])
        row["process_s"] = wall  # interpreter start, import, load, predict, exit
        out.append(row)
    return {
        "runs": out,
        "median_import_load_s": statistics.median(r["import_load_s"] for r in out),
        "median_predict_s": statistics.median(r["predict_s"] for r in out),
        "median_process_s": statistics.median(r["process_s"] for r in out),
        "torch_imported": any(r["torch_after_predict"] for r in out),
    }


class OpenVinoSession:
    """An OpenVINO compiled model behind the two calls `OnnxPredictor` and the timing make of
    an ONNX Runtime session (`get_inputs`, `run`), so both runtimes label and time alike."""

    def __init__(self, compiled):
        from types import SimpleNamespace

        self.compiled = compiled
        self.request = compiled.create_infer_request()
        self.inputs = [SimpleNamespace(name=i.get_any_name()) for i in compiled.inputs]

    def get_inputs(self):
        return self.inputs

    def run(self, _outputs, feed):
        return [self.request.infer(feed)[self.compiled.output(0)]]


def openvino_sessions(onnx_path: Path, feeds, threads: int) -> dict[str, Any]:
    """OpenVINO's fp32 runtime of the exported graph and its static int8 (NNCF
    post-training quantization, transformer preset, calibrated on `feeds`: training sentences,
    never dev), each compiled for the CPU with `threads` inference threads and fp32 as the
    precision hint (else a bf16-capable CPU would run "fp32" in bf16). Empty when OpenVINO or
    NNCF is not installed (`pip install openvino nncf`)."""
    try:
        import nncf
        import openvino as ov
    except ImportError:
        return {}
    core = ov.Core()
    model = core.read_model(str(onnx_path))
    config = openvino_cpu_settings(threads)  # as the ov-* precisions compile
    quantized = nncf.quantize(
        model,
        nncf.Dataset(list(feeds)),
        model_type=nncf.ModelType.TRANSFORMER,
        subset_size=len(feeds),
    )
    return {
        "openvino fp32": OpenVinoSession(core.compile_model(model, "CPU", config)),
        "openvino int8 (NNCF static)": OpenVinoSession(
            core.compile_model(quantized, "CPU", config)
        ),
        "versions": {"openvino": ov.__version__, "nncf": nncf.__version__},
    }


def quantize_onnx(
    fp32: Path,
    out_dir: Path,
    calibration: list[dict[str, Any]],
    *,
    ops: str,
    reduce_range: bool,
) -> dict[str, Any]:
    """Static int8 (QDQ) of the graph `fp32` into `out_dir/model_int8.onnx`, calibrated on the
    input feeds `calibration`; what was done, for the JSON."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Feeds(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(calibration)

        def get_next(self) -> dict[str, Any] | None:
            return next(self.it, None)

    info: dict[str, Any] = {}
    pre = out_dir / "model_pre.onnx"
    t = time.perf_counter()
    try:
        quant_pre_process(str(fp32), str(pre))
        source = pre
        info["pre_process"] = "quant_pre_process (symbolic shape inference, optimization)"
    except Exception as e:  # noqa: BLE001 - report and quantize the graph as exported
        source = fp32
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        info["pre_process"] = f"failed ({type(e).__name__}: {first}); quantized as exported"
    graph = onnx.load(str(source))
    constants = {i.name for i in graph.graph.initializer}
    linear = [
        n.name
        for n in graph.graph.node
        if n.op_type in ("MatMul", "Gemm") and any(x in constants for x in n.input)
    ]
    out = out_dir / "model_int8.onnx"
    quantize_static(
        str(source),
        str(out),
        Feeds(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        reduce_range=reduce_range,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        nodes_to_quantize=linear if ops == "linear" else None,
        calibrate_method=CalibrationMethod.MinMax,
    )
    info.update(
        format="QDQ",
        weights="int8 per channel" + (", 7-bit (reduce_range)" if reduce_range else ""),
        activations="uint8, one static scale per tensor (MinMax)",
        quantized_ops=(
            f"linear: {len(linear)} MatMul/Gemm nodes with a constant weight"
            if ops == "linear"
            else "all operators the QDQ quantizer supports"
        ),
        calibration_batches=len(calibration),
        calibration_examples=sum(len(b["input_ids"]) for b in calibration),
        seconds=time.perf_counter() - t,
        fp32_bytes=fp32.stat().st_size,
        int8_bytes=out.stat().st_size,
    )
    return {"path": out, "info": info}


def calibration_feeds(pipe, tokenizer, max_seq_len: int, count: int, seed: int, names):
    """`count` seeded training sentences (never dev) tokenised and padded as the ONNX export
    does, sorted by length, in batches of CALIBRATION_BATCH, as ONNX Runtime input feeds."""
    from autoprumux.data import encode, pad

    train = pipe.data.train
    picked = random.Random(seed).sample(range(len(train)), min(count, len(train)))
    items = sorted(
        encode([train[i] for i in picked], tokenizer, max_seq_len), key=lambda x: len(x.input_ids)
    )
    feeds = []
    for s in range(0, len(items), CALIBRATION_BATCH):
        arrays = pad(items[s : s + CALIBRATION_BATCH])
        feeds.append({k: arrays[k] for k in names})
    return feeds


def share_equal(a, b) -> float:
    return sum(int(x == y) for x, y in zip(a, b, strict=True)) / len(a)


def accuracy(pred, gold) -> float:
    return 100 * share_equal(list(pred), list(gold))


def measure_one(pipe, sparsity: float, args, tmp: Path) -> dict[str, Any]:
    """Everything above for the N=1 fp32 model at `sparsity`."""
    import numpy as np
    import torch

    import autoprumux
    from autoprumux.config import Candidate, ThroughputConfig
    from autoprumux.deploy import ONNX_FILE, OnnxPredictor, read_manifest
    from autoprumux.evaluation import model_runner, time_interleaved
    from autoprumux.export import export_model

    config = Candidate(sparsity=sparsity)
    # the export measures the model beside its baseline: only its dev accuracy is used here, so
    # its throughput is timed on a token batch
    cheap = ThroughputConfig(batch_size=8, seq_len=16, repeats=1, warmup=0)
    dirs: dict[str, Path] = {}
    for fmt in ("onnx", "torch"):
        t = time.perf_counter()
        dirs[fmt] = tmp / f"s{sparsity:g}-{fmt}"
        export_model(pipe, config, dirs[fmt], throughput=cheap, model_format=fmt)
        print(
            f"s={sparsity:g}: exported --format {fmt} ({time.perf_counter() - t:.0f}s)",
            file=sys.stderr,
            flush=True,
        )
    onnx_pred = autoprumux.load(dirs["onnx"], threads=args.threads)
    torch_pred = autoprumux.load(dirs["torch"])
    torch_int8 = autoprumux.load(dirs["torch"], precision="int8")
    assert isinstance(onnx_pred, OnnxPredictor)
    measured = {fmt: read_manifest(d).measurement for fmt, d in dirs.items()}

    dev = pipe.data.dev
    texts = [(e.text_a, e.text_b) if pipe.task.pair else e.text_a for e in dev]
    gold = [e.label for e in dev]
    logits = {
        "onnxruntime fp32": np.asarray(onnx_pred.logits(texts)),
        "torch fp32": np.asarray(torch_pred.logits(texts)),
        "torch int8 (static)": np.asarray(torch_int8.logits(texts)),
    }

    # ONNX Runtime's static int8 of the exported graph
    names = onnx_pred.input_names
    feeds = calibration_feeds(
        pipe, onnx_pred.tokenizer, pipe.max_seq_len, args.calibration, args.seed, names
    )
    reduce_range = {"auto": not has_int8_dot(), "on": True, "off": False}[args.ort_reduce_range]
    qdir = tmp / f"s{sparsity:g}-ort-int8"
    qdir.mkdir()
    wait_while(args.wait_while)
    q = quantize_onnx(
        dirs["onnx"] / ONNX_FILE, qdir, feeds, ops=args.ort_ops, reduce_range=reduce_range
    )
    q_session = cpu_session(q["path"].read_bytes(), args.threads)
    q_pred = OnnxPredictor(
        q_session, onnx_pred.tokenizer, onnx_pred.manifest, batch_size=onnx_pred.batch_size
    )
    logits["onnxruntime int8 (static QDQ)"] = np.asarray(q_pred.logits(texts))
    wait_while(args.wait_while)
    ov = openvino_sessions(dirs["onnx"] / ONNX_FILE, feeds, args.threads)
    ov_versions = ov.pop("versions", None)
    for k, session in ov.items():
        ov_pred = OnnxPredictor(
            session, onnx_pred.tokenizer, onnx_pred.manifest, batch_size=onnx_pred.batch_size
        )
        logits[k] = np.asarray(ov_pred.logits(texts))
    labels = {k: v.argmax(-1).tolist() for k, v in logits.items()}
    print(f"s={sparsity:g}: dev labelled by every runtime", file=sys.stderr, flush=True)

    quality = {
        k: {
            "dev_accuracy": accuracy(labels[k], gold),
            "agreement_with_torch_fp32": share_equal(labels[k], labels["torch fp32"]),
            "max_logit_diff_from_torch_fp32": float(np.abs(logits[k] - logits["torch fp32"]).max()),
        }
        for k in logits
    }
    quality["onnxruntime int8 (static QDQ)"]["agreement_with_onnxruntime_fp32"] = share_equal(
        labels["onnxruntime int8 (static QDQ)"], labels["onnxruntime fp32"]
    )
    quality["onnxruntime int8 (static QDQ)"]["agreement_with_torch_int8"] = share_equal(
        labels["onnxruntime int8 (static QDQ)"], labels["torch int8 (static)"]
    )

    # start-up in fresh interpreters
    starts = {
        "onnx": startup(dirs["onnx"], args.startup_runs, args.wait_while),
        "torch": startup(dirs["torch"], args.startup_runs, args.wait_while),
    }
    print(f"s={sparsity:g}: start-up timed", file=sys.stderr, flush=True)

    # throughput and latency, every runtime in the same interleaved rounds
    def ort_runner(session, batch):
        feed = {k: batch[k].numpy() for k in names}
        return (lambda: session.run(None, feed)), batch["input_ids"].shape[0]

    timed: dict[str, Any] = {}
    for what, b, repeats in (
        ("throughput", args.batch, args.repeats),
        ("latency", 1, args.latency_repeats),
    ):
        tp = ThroughputConfig(batch_size=b, seq_len=args.seq_len, repeats=repeats)
        batch = pipe.throughput_batch(tp)
        fns = {
            "torch fp32": model_runner(torch_pred.model, batch, "cpu"),
            "torch int8 (static)": model_runner(torch_int8.model, batch, "cpu"),
            "onnxruntime fp32": ort_runner(onnx_pred.session, batch),
            "onnxruntime int8 (static QDQ)": ort_runner(q_session, batch),
            **{k: ort_runner(session, batch) for k, session in ov.items()},
        }
        wait_while(args.wait_while)
        load_before = os.getloadavg()[0]
        res = time_interleaved(fns, cfg=tp)
        timed[what] = {
            # the machine's 1-minute load average before and after: above --threads, other
            # processes were competing for the cores while this ran
            "load_average": [load_before, os.getloadavg()[0]],
            "batch": b,
            "seq_len": args.seq_len,
            "repeats": repeats,
            "runtimes": {
                k: {
                    "examples_per_second": r.examples_per_second,
                    "median_batch_ms": r.latency_ms,
                    "speedup_over_torch_fp32": res["torch fp32"].median_batch_seconds
                    / r.median_batch_seconds,
                    "batch_seconds": list(r.batch_seconds),
                }
                for k, r in res.items()
            },
        }
        print(f"s={sparsity:g}: {what} timed", file=sys.stderr, flush=True)

    m = measured["torch"]
    enc = torch_pred.model.encoder.config
    return {
        "target_sparsity": sparsity,
        "sparsity": m.sparsity,
        "heads": list(enc.heads),
        "ffn": list(enc.ffn),
        "evaluate_accuracy": m.accuracy,
        "evaluate_accuracy_onnx_manifest": measured["onnx"].accuracy,
        "baseline_accuracy": m.baseline_accuracy,
        "dev_examples": len(dev),
        "quality": quality,
        "onnx_agreement_with_torch": quality["onnxruntime fp32"]["agreement_with_torch_fp32"],
        "accuracy_gap_from_evaluate": {
            k: quality[k]["dev_accuracy"] - m.accuracy for k in ("onnxruntime fp32", "torch fp32")
        },
        "startup": starts,
        "timing": timed,
        "ort_int8": q["info"],
        "openvino": ov_versions or "not installed (pip install openvino nncf)",
        "torch_threads": torch.get_num_threads(),
        "ort_threads": args.threads,
    }


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| s | runtime | dev acc | agree w/ torch fp32 | ex/s b{b} | x torch fp32 | b1 ms | "
        "import+load s | torch imported |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    b = rows[0]["timing"]["throughput"]["batch"] if rows else 64
    lines[0] = lines[0].format(b=b)
    for row in rows:
        for k, qual in row["quality"].items():
            tp = row["timing"]["throughput"]["runtimes"][k]
            lat = row["timing"]["latency"]["runtimes"][k]
            fmt = {"onnxruntime fp32": "onnx", "torch fp32": "torch"}.get(k)
            st = row["startup"][fmt] if fmt else None
            lines.append(
                f"| {row['target_sparsity']:g} | {k} | {qual['dev_accuracy']:.2f} | "
                f"{100 * qual['agreement_with_torch_fp32']:.2f}% | "
                f"{tp['examples_per_second']:.1f} | {tp['speedup_over_torch_fp32']:.2f}x | "
                f"{lat['median_batch_ms']:.1f} | "
                + (f"{st['median_import_load_s']:.2f} | {st['torch_imported']} |" if st else " | |")
            )
    for row in rows:
        lines.append(
            f"\ns={row['target_sparsity']:g}: evaluate's dev accuracy {row['evaluate_accuracy']:.2f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--task", default="sst2")
    ap.add_argument("--sparsities", type=float, nargs="+", default=[0.0, 0.5])
    ap.add_argument("--preset", default="quick", help="the recipe preset (Recipe.preset)")
    ap.add_argument("--recipe", nargs="*", default=[], metavar="FIELD=VALUE", help=RECIPE_HELP)
    ap.add_argument("--model", default=None, help="default: the packaged MiniLM")
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--threads", type=int, default=2, help="torch and ONNX Runtime threads")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=10, help="timed rounds at --batch")
    ap.add_argument("--latency-repeats", type=int, default=50, help="timed rounds at batch 1")
    ap.add_argument("--startup-runs", type=int, default=5)
    ap.add_argument("--calibration", type=int, default=512, help="training sentences")
    ap.add_argument("--seed", type=int, default=0, help="which training sentences calibrate")
    ap.add_argument("--ort-ops", choices=["linear", "all"], default="linear")
    ap.add_argument("--ort-reduce-range", choices=["auto", "on", "off"], default="auto")
    ap.add_argument(
        "--wait-while",
        default=None,
        metavar="FILE",
        help="before each timed part, wait while FILE exists (a shared machine's marker)",
    )
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    try:
        overrides = recipe_overrides(args.recipe)
    except ValueError as e:
        ap.error(str(e))
    out = Path(args.out or f"benchmarks/results/onnx_runtime_{args.task}_cpu.json")

    import logging
    import warnings

    import torch

    from autoprumux.config import Recipe
    from autoprumux.pipeline import PruMuxPipeline

    warnings.filterwarnings("ignore")
    logging.getLogger("onnxruntime").setLevel(logging.ERROR)
    torch.set_num_threads(args.threads)
    os.environ.setdefault("AUTOPRUMUX_PROGRESS", "0")
    recipe = Recipe.preset(args.preset, **overrides)
    wait_while(args.wait_while)
    pipe = PruMuxPipeline(
        task=args.task, model=args.model, recipe=recipe, device="cpu", cache_dir=args.cache_dir
    )
    import onnxruntime

    doc: dict[str, Any] = {
        "command": "python " + " ".join([f"benchmarks/{Path(__file__).name}", *sys.argv[1:]]),
        "machine": machine(),
        "onnxruntime": onnxruntime.__version__,
        "int8_dot_product": has_int8_dot(),
        "task": pipe.task.name,
        "base_model": pipe.model_id,
        "recipe_preset": args.preset,
        "recipe_overrides": overrides,
        "recipe": pipe.recipe.__dict__,
        "targets": {
            "onnx_agreement_with_torch": ">= 0.995",
            "accuracy_within_points_of_evaluate": 0.1,
            "onnx_import_load_s": "<= 2",
        },
        "rows": [],
    }
    tmp = Path(tempfile.mkdtemp(prefix="onnx-runtime-bench-"))
    try:
        for s in args.sparsities:
            doc["rows"].append(measure_one(pipe, s, args, tmp))
            write_json(out, doc)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(markdown(doc["rows"]))
    print(f"\nwritten to {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
