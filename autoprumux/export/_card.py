"""The model card (`README.md`) of an exported model, rendered from its manifest: what it is,
how it measured beside its baseline, where, when and by which command it was made, and how to
use it."""

from __future__ import annotations

from autoprumux._selection import DEV_CHOSEN
from autoprumux.deploy import ExportManifest, ExportSource
from autoprumux.models import AnyModel, StudentEnsemble
from autoprumux.pipeline import DEV_PAIRINGS


def _architecture(model: AnyModel) -> list[str]:
    if isinstance(model, StudentEnsemble):
        return [f"| students | {model.k} students of {model.depth} layers (logits summed) |"]
    cfg = model.encoder.config
    return [
        f"| encoder layers | {cfg.num_layers} (hidden size {cfg.hidden_size}) |",
        f"| attention heads kept per layer | {list(cfg.heads)} |",
        f"| FFN units kept per layer | {list(cfg.ffn)} |",
    ]


def _configuration(m: ExportManifest) -> list[str]:
    c = m.config
    rows = ["| | |", "|---|---|"]
    if c.technique == "students":
        rows.append(f"| technique | Academus students, K={c.students}, depth {c.student_depth} |")
    else:
        mux = f"{c.mux} ({c.mux_variant} mux)" if c.mux > 1 else "1 (no multiplexing)"
        rows += [
            "| technique | PruMUX (structured pruning x data multiplexing) |",
            f"| sparsity (target / measured) | {c.sparsity:g} / {m.measurement.sparsity:.3f} |",
            f"| N, inputs per forward pass | {mux} |",
        ]
        if c.mux_shape.late:
            rows.append(f"| late multiplexing | {_late(c.mux_layers, c.mux_combiner, c.mux)} |")
    how = (
        "stored and run in fp32"
        if c.precision == "fp32"
        else "stored as measured, run by OpenVINO"
        if m.model_format == "openvino"
        else "stored in fp32, converted when loaded"
    )
    kind = "text pairs (`text`, `text_pair`)" if m.pair else "single texts"
    rows += [
        f"| precision | {c.precision} ({how}) |",
        f"| base model | `{m.base_model}` |",
        f"| task | {m.task}: {kind}, at most {m.max_seq_len} tokens (longer are truncated) |",
        f"| labels | {', '.join(f'`{x}`' for x in m.label_names)} |",
    ]
    if m.model_format == "onnx":
        rows.append(
            f"| format | ONNX (`model.onnx`, run by ONNX Runtime {_version('onnxruntime')} on the "
            "CPU without torch; "
            "measured below as the torch model it was exported from) |"
        )
    if m.model_format == "openvino":
        rows.append(
            f"| format | OpenVINO IR (`model.xml`, `model.bin`, run by OpenVINO "
            f"{_version('openvino')} on the CPU without torch, as measured below) |"
        )
    return rows


def _version(package: str) -> str:
    """The installed version of the runtime that runs the export (release part only)."""
    from importlib.metadata import version

    return version(package).split("-")[0]


def _late(k: int, combiner: str, n: int) -> str:
    """What a late multiplexed model does before its N inputs share the encoder."""
    how = {
        "concat": "a learned concat combiner (each input projected to hidden/N, concatenated)",
        "concat_skip": "a learned concat combiner (each input projected to hidden/N, "
        "concatenated; each output also reads its own input's states)",
    }.get(combiner, "the fixed binding of the mux variant (averaged)")
    first = f"the first {k} encoder layers run on each input alone, then " if k else ""
    return f"k={k}, {combiner}: {first}{how} combines the {n} inputs"


def render_card(m: ExportManifest, model: AnyModel) -> str:
    r = m.measurement
    c = m.config
    metric = r.metric_label
    src = m.source
    graph = m.model_format != "torch"
    lines = [
        f"# {m.task}: {c.describe()} (autoprumux export)",
        "",
        f"Exported {m.created} by "
        + (f"`{m.command}`" if m.command else "the Python API")
        + (f", from {_source(src)}" if src.kind != "explicit" else "")
        + ".",
        "",
        "## Configuration",
        "",
        *_configuration(m),
        *_architecture(model),
        "",
        f"## Measured at export (dev set, {r.dev_examples} examples, device {r.device})",
        "",
        *_measured_table(m),
        "",
        f"Accuracy loss: {r.accuracy_loss:.2f} points of {metric} on dev (what to expect). "
        f"{_validation_line(m)} Throughput timed side by side in one process at a batch of "
        f"{r.throughput_batch} x {r.throughput_seq_len} tokens (the median of repeated passes).",
    ]
    if c.mux > 1:
        lines += [
            f"The dev {metric} of an N={c.mux} model is the mean over {DEV_PAIRINGS} seeded orders "
            "of the dev "
            "set: inputs that share a group of N are mixed in one pass, so the result depends "
            "slightly on which inputs are grouped.",
        ]
    rec = src.recorded
    if rec:
        parts = (
            [f"loss {rec['validation_loss']:.2f} points on validation (chosen on)"]
            if "validation_loss" in rec
            else []
        )
        if "accuracy_loss" in rec:
            parts.append(f"accuracy loss {rec['accuracy_loss']:.2f} points on dev")
        if "speedup" in rec:
            parts.append(f"speedup {rec['speedup']:.2f}x")
        lines += ["", f"Recorded by the study for this configuration: {', '.join(parts)}."]
    if r.baseline_training:  # whether the baseline every loss is measured against converged
        lines += ["", f"{r.baseline_training[0].upper()}{r.baseline_training[1:]}."]
    lines += _training_stages(m)
    lines += [
        "",
        "## Machine",
        "",
        *[f"- {k}: {v}" for k, v in m.machine.items()],
        "",
        "## Use",
        "",
        "```python",
        "import autoprumux",
        "",
        'predictor = autoprumux.load("THIS_DIRECTORY")'
        + ("  # threads=4: the runtime's threads" if graph else '  # device="cuda" for a GPU'),
        f"out = predictor.predict([{_example(m.pair)}])",
        "out.labels, out.probabilities",
        "```",
        "",
        "```bash",
        "autoprumux predict THIS_DIRECTORY --input texts.csv --output scored.csv",
        "```",
        "",
        {
            "onnx": "The loader needs onnxruntime and tokenizers only, no torch (`pip install "
            "'autoprumux[onnx]'`).",
            "openvino": "The loader needs openvino and tokenizers only, no torch (`pip install "
            "openvino`).",
        }.get(m.model_format, "The loader needs torch and transformers only.")
        + " Files: docs/export.md of autoprumux.",
    ]
    if c.mux > 1:
        lines += [
            "",
            f"The predictor takes the inputs in order, {c.mux} at a time (a last incomplete group "
            "is padded with dummy inputs), so it is used like any other model; the same inputs "
            "in the same order always get the same answers.",
        ]
    return "\n".join(lines) + "\n"


def _training_stages(m: ExportManifest) -> list[str]:
    """How each training stage of this model stopped: on its validation plateau, at the
    recipe's step cap, or at its cap without validation (none: the baseline's own shape)."""
    stages = m.measurement.stage_training
    if not stages:
        return []
    rows = [
        "",
        "## Training stages",
        "",
        "Each stage trained until its metric on the stopping split plateaued, the recipe's step "
        "count its cap:",
        "",
        "| stage | stopped | steps / cap |",
        "|---|---|---:|",
    ]
    for st in stages:
        steps = "-" if st.get("steps") is None else f"{st['steps']} / {st.get('cap')}"
        rows.append(f"| {st.get('name', st.get('stage'))} | {_stopped(st)} | {steps} |")
    return rows


def _stopped(st: dict) -> str:
    """A stage's stop, in a few words."""
    kind = st.get("stopped")
    if kind == "converged":
        return f"converged (best validation {st['best_metric']:.2f} at step {st['best_step']})"
    if kind == "cap":
        return f"its cap, not converged (raise `{st.get('cap_field')}`)"
    if kind == "unvalidated":
        return f"its cap, unvalidated ({st.get('unvalidated')})"
    return "not recorded"


def _measured_table(m: ExportManifest) -> list[str]:
    r = m.measurement
    # the task's metric, and accuracy beside it when the metric is another (MCC for CoLA)
    both = r.metric_name != "accuracy"
    head = f"| model | {r.metric_label} |" + (" accuracy |" if both else "")
    rows = [
        head + " examples/s | speedup |",
        "|---|---:|" + ("---:|" if both else "") + "---:|---:|",
    ]
    for name, metric, acc, tp, speedup in (
        (
            "baseline (N=1, sparsity 0, fp32)",
            r.baseline_metric,
            r.baseline_accuracy,
            r.baseline_throughput,
            1.0,
        ),
        ("this model", r.metric, r.accuracy, r.throughput, r.speedup),
    ):
        extra = f" {acc:.2f} |" if both else ""
        rows.append(f"| {name} | {metric:.2f} |{extra} {tp:.1f} | {speedup:.2f}x |")
    return rows


def _validation_line(m: ExportManifest) -> str:
    """The loss on the validation split, which a search chooses on, or why there is none."""
    r = m.measurement
    if r.validation_loss is None:
        return f"No validation loss ({DEV_CHOSEN})."
    se = "" if r.validation_loss_se is None else f" +-{r.validation_loss_se:.2f} (paired SE)"
    where = " and ".join(r.validation_split.split("+"))
    splits = "split" if where == r.validation_split else "splits"
    return (
        f"On the {where} {splits} ({r.validation_examples} training examples held out, never "
        f"trained on; a search chooses on it): {r.validation_loss:.2f} points{se} "
        f"({r.baseline_validation_metric:.2f} -> {r.validation_metric:.2f})."
    )


def _source(src: ExportSource) -> str:
    if src.kind == "budget":
        return (
            f"the recommendation of study `{src.study}` within {src.budget:g} "
            f"accuracy-loss points (trial {src.trial})"
        )
    return f"trial {src.trial} of study `{src.study}`"


def _example(pair: bool) -> str:
    if pair:
        return '("The cat sat.", "A cat was sitting.")'
    return '"a gripping, beautifully acted film"'
