"""Names and limits shared across the package: the precisions, techniques, mux variants and
combiners, poolings, samplers, trainers and the other choices a value must be one of, and the
rule between the trainer's fields (`validate_trainer`)."""

from __future__ import annotations

from autoprumux.errors import ConfigError

# ---- names and limits shared across the package ---------------------------------------------
# numeric precision at inference; which a device offers (the CPU: static int8 of the linear
# layers in torch, and the model run by OpenVINO in fp32 or NNCF's static int8; CUDA: TF32
# matmuls, bf16, fp16)
PRECISIONS = ("fp32", "int8", "tf32", "bf16", "fp16", "ov-fp32", "ov-int8")
DEVICE_PRECISIONS = {
    "cpu": ("fp32", "int8", "ov-fp32", "ov-int8"),
    "cuda": ("fp32", "tf32", "bf16", "fp16"),
}
# the precisions run by OpenVINO (its graph of the model, not torch), by their numeric precision
OPENVINO_PRECISIONS = {"ov-fp32": "fp32", "ov-int8": "int8"}
# what converting to an OpenVINO precision imports: the ONNX exporter and OpenVINO with NNCF
OPENVINO_PACKAGES = ("onnx", "onnxscript", "openvino", "nncf")
OPENVINO_INSTALL = "pip install 'autoprumux[openvino]'"
# a model's ONNX graph (the ONNX export, and what OpenVINO reads): int64 inputs (batch,
# sequence; a model may take fewer, the first two always) and its output (batch, classes)
GRAPH_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
GRAPH_OUTPUT = "logits"
# each precision's distance from fp32 (loss and speed do not fall as it rises, within one
# runtime: torch's and OpenVINO's are separate families; bf16 = fp16)
PRECISION_RANK = {"fp32": 0, "tf32": 1, "bf16": 2, "fp16": 2, "int8": 3, "ov-fp32": 0, "ov-int8": 3}


def runtime_of(precision: str) -> str:
    """What runs a model of `precision`: "openvino" or "torch"."""
    return "openvino" if precision in OPENVINO_PRECISIONS else "torch"


def openvino_cpu_settings(threads: int) -> dict[str, object]:
    """How an OpenVINO model is compiled for the CPU, measured and deployed alike: `threads`
    inference threads, and fp32 as the precision hint (else a bf16-capable CPU would run "fp32"
    in bf16)."""
    return {"INFERENCE_NUM_THREADS": int(threads), "INFERENCE_PRECISION_HINT": "f32"}


TASK_NAMES = ("cola", "mrpc", "qnli", "sst2")  # the built-in GLUE tasks (see autoprumux.data)
TECHNIQUES = ("prumux", "students")
MUX_VARIANTS = ("gaussian", "orthogonal")
# how N instances combine: fixed binding (the mux variant) + average, or learned projections
# to H/N, concatenated ("concat_skip": the demux also reads each instance's pre-combiner states)
MUX_COMBINERS = ("binding", "concat", "concat_skip")
SPLIT_COMBINERS = MUX_COMBINERS[1:]  # they project to H/N: N must divide the hidden size
POOLINGS = ("cls", "mean")
MAX_MUX = 64  # DataMUX reports usable accuracy up to N=40
MAX_MUX_LAYERS = 64  # an upper bound on any encoder's depth; the model's own is checked on build
MAX_STUDENTS = 16
STUDENT_DEPTHS = (1, 2, 3)
LOGIT_LOSSES = ("mse", "kl")  # students distil by MSE on the residual or KL around the sum
STUDENT_INITS = ("bottom", "spread")  # student j's first layer: the teacher's lowest, or spread
RECOVERY_SCHEDULES = ("even", "rising")  # recovery steps per pruning stage
# what a pruning plan weighs a structure's estimated loss against: the parameters or the
# inference time its removal saves
PLAN_COSTS = ("params", "time")
# how a pruning path's sparsity rises over its steps (cubic: fast first, slow near the end)
PATH_SCHEDULES = ("cubic", "linear")
# where a pruned N=1 model comes from: its own prune-and-recover, or the pruning path's level
RECOVERY_SOURCES = ("separate", "path")
SAMPLERS = ("tpe", "guided", "random", "grid")
TRAINERS = ("standard", "l2l", "auto")
STASH_PLACES = ("device", "host")
L2L_CLIP_MODES = ("global", "stage", "previous")
# how training draws its batches: shuffled, or shuffled pools sorted by length (less padding)
BATCHINGS = ("random", "grouped")
# the precision of the training loop's forward (weights, gradients and optimizer stay fp32);
# "auto": bf16 where the device multiplies bf16 natively (see training.resolve_autocast)
TRAIN_AUTOCASTS = ("auto", "fp32", "bf16")


def validate_trainer(
    trainer: object, micro_batches: object, stash: object, batch_size: int
) -> None:
    """Check the trainer choice (shared by `Recipe`, `TrainConfig` and `L2LExecutor`)."""
    if trainer not in TRAINERS:
        raise ConfigError(
            f"trainer ({trainer!r}) must be one of {list(TRAINERS)}; use 'l2l' for the "
            "layer-to-layer trainer with constant device memory, 'auto' for the standard loop "
            "that retries with 'l2l' when the device runs out of memory"
        )
    if isinstance(micro_batches, bool) or not isinstance(micro_batches, int) or micro_batches < 1:
        raise ConfigError(
            f"micro_batches ({micro_batches!r}) must be a positive integer, e.g. 4 (1 = the "
            "whole batch at once)"
        )
    if stash not in STASH_PLACES:
        raise ConfigError(
            f"stash ({stash!r}) must be one of {list(STASH_PLACES)}; 'host' keeps device "
            "memory independent of depth, 'device' avoids the copies"
        )
    if trainer in ("l2l", "auto") and batch_size % micro_batches:
        raise ConfigError(
            f"batch size ({batch_size}) must be a multiple of the L2L micro-batch count "
            f"({micro_batches}); choose a divisor of {batch_size} or another batch size"
        )
