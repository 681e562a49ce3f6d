"""Which int8 backend for the CPU: PyTorch's dynamic quantization, torchao, ONNX Runtime or
OpenVINO.

Times the packaged MiniLM classifier (the fp32 baseline's shape; random head) in fp32 and
converted to dynamic int8 by each backend that is installed, side by side in one process
(interleaved rounds, median), on one fixed batch, and reports each one's speedup over fp32 and
its largest logit difference from fp32. torchao, ONNX Runtime and OpenVINO (with NNCF) are
optional: a backend that is not installed, or fails on this model, is reported as such.
OpenVINO runs three ways: its fp32 runtime, int8 weights (NNCF `compress_weights`, activations
in fp32) and static int8 (NNCF `quantize`, calibrated on the timed batch itself, so the figure
is an upper bound on its speed, not a measure of its accuracy).

    python benchmarks/int8_backends.py --batch 32 --seq-len 128 --repeats 10
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from _results import machine, write_json

from autoprumux.models import MuxConfig, MuxSequenceClassifier, resolve_model


def torch_ao(model: torch.nn.Module) -> Callable[..., torch.Tensor]:
    """PyTorch's dynamic int8 (one input scale per batch), per-channel weights."""
    from autoprumux.models._precision import _quantizable

    qconfig = torch.ao.quantization.per_channel_dynamic_qconfig
    q = torch.ao.quantization.quantize_dynamic(
        copy.deepcopy(model), dict.fromkeys(_quantizable(model), qconfig), dtype=torch.qint8
    )
    return lambda *a: q(*a)


def autoprumux_static(model: torch.nn.Module, batch: tuple[torch.Tensor, ...]):
    """The project's int8: static input scales (calibrated here on the timed batch itself)."""
    from autoprumux.models import calibrate_int8, to_precision

    q = to_precision(model, "int8", calibration=calibrate_int8(model, [batch]))
    return lambda *a: q(*a)


def torchao(model: torch.nn.Module) -> Callable[..., torch.Tensor]:
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

    q = copy.deepcopy(model)
    quantize_(q, Int8DynamicActivationInt8WeightConfig())
    return lambda *a: q(*a)


def onnxruntime(model: torch.nn.Module, batch: tuple[torch.Tensor, ...], threads: int):
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    d = Path(tempfile.mkdtemp(prefix="int8-onnx-"))
    names = ["input_ids", "attention_mask", "token_type_ids"]
    torch.onnx.export(
        model, batch, d / "fp32.onnx", input_names=names, output_names=["logits"], dynamo=False
    )
    quantize_dynamic(d / "fp32.onnx", d / "int8.onnx", weight_type=QuantType.QInt8)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(d / "int8.onnx"), opts, providers=["CPUExecutionProvider"])
    feed = {n: t.numpy() for n, t in zip(names, batch, strict=True)}
    return lambda *a: torch.from_numpy(sess.run(None, feed)[0])


def openvino(model: torch.nn.Module, batch: tuple[torch.Tensor, ...], threads: int, how: str):
    import openvino as ov

    ov_model = ov.convert_model(model, example_input=batch)
    if how == "weights":
        import nncf

        ov_model = nncf.compress_weights(ov_model, mode=nncf.CompressWeightsMode.INT8_ASYM)
    elif how == "static":
        import nncf

        feed = [dict(enumerate(t.numpy() for t in batch))]
        ov_model = nncf.quantize(
            ov_model, nncf.Dataset(feed), model_type=nncf.ModelType.TRANSFORMER, subset_size=1
        )
    compiled = ov.Core().compile_model(
        ov_model, "CPU", {"INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": "f32"}
    )
    inputs = [t.numpy() for t in batch]
    return lambda *a: torch.from_numpy(compiled(inputs)[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--out", default="benchmarks/results/int8_backends_cpu.json")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    torch.manual_seed(0)
    model = MuxSequenceClassifier(
        resolve_model(None).build_encoder(), num_labels=2, mux=MuxConfig(n=1)
    ).eval()
    ids = torch.randint(1000, 20000, (args.batch, args.seq_len))
    batch = (ids, torch.ones_like(ids), torch.zeros_like(ids))
    runners: dict[str, Callable[..., torch.Tensor]] = {"fp32": lambda *a: model(*a)}
    failed: dict[str, str] = {}
    builders = {
        "autoprumux static int8 (oneDNN)": lambda: autoprumux_static(model, batch),
        "torch.ao dynamic int8": lambda: torch_ao(model),
        "torchao int8 dynamic": lambda: torchao(model),
        "onnxruntime int8 dynamic": lambda: onnxruntime(model, batch, torch.get_num_threads()),
        "openvino fp32": lambda: openvino(model, batch, torch.get_num_threads(), "fp32"),
        "openvino int8 weights": lambda: openvino(model, batch, torch.get_num_threads(), "weights"),
        "openvino int8 static": lambda: openvino(model, batch, torch.get_num_threads(), "static"),
    }
    for name, build in builders.items():
        try:
            runners[name] = build()
        except Exception as e:  # noqa: BLE001 - an optional backend that is missing or fails
            failed[name] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
    with torch.inference_mode():
        ref = model(*batch)
        diff = {k: float((f(*batch) - ref).abs().max()) for k, f in runners.items()}
        for f in runners.values():  # warm-up
            f(*batch)
        times: dict[str, list[float]] = {k: [] for k in runners}
        for _ in range(args.repeats):
            for k, f in runners.items():
                t = time.perf_counter()
                f(*batch)
                times[k].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    rows = {
        k: {"speedup": med["fp32"] / med[k], "max_logit_diff": diff[k], "median_s": med[k]}
        for k in runners
    }
    for k, r in rows.items():
        print(f"{k:<32} {r['speedup']:5.2f}x  max |logit diff| {r['max_logit_diff']:.4f}")
    for k, why in failed.items():
        print(f"{k:<32} not measured: {why}")
    write_json(
        args.out,
        {
            "command": "python benchmarks/int8_backends.py "
            f"--batch {args.batch} --seq-len {args.seq_len} --repeats {args.repeats}",
            "machine": machine(),
            "batch": args.batch,
            "seq_len": args.seq_len,
            "threads": torch.get_num_threads(),
            "backends": rows,
            "not_measured": failed,
        },
    )


if __name__ == "__main__":
    main()
