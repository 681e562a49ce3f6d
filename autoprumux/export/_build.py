"""Write one configuration as a deployable directory (layout: docs/export.md).

The model is built (or taken from the cache) and measured beside its baseline by the pipeline,
exactly as `autoprumux evaluate` would; its fp32 weights (the torch format), its fp32 ONNX
graph (the ONNX format, `export._onnx`) or the OpenVINO graph it was measured as (IR, the
OpenVINO format), tokenizer, manifest and model card are written into a
temporary directory beside the target, the directory is loaded back with
`autoprumux.deploy.load` and must reproduce the pipeline's predictions, and only then is it
renamed into place: an interrupted or failed export leaves no half-written directory.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import glob
import json
import os
import platform
import shutil
import signal
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from autoprumux._paths import dir_problem, resolved
from autoprumux.config import Candidate, ThroughputConfig, check_precision
from autoprumux.deploy import (
    CALIBRATION_FILE,
    CARD_FILE,
    MANIFEST_FILE,
    MODEL_FORMATS,
    ExportManifest,
    ExportSource,
    Measurement,
    load,
)
from autoprumux.deploy._files import read_json
from autoprumux.deploy._manifest import default_format, format_problem, record_files
from autoprumux.deploy._tokenizer import TOKENIZER_FILE
from autoprumux.errors import ConfigError
from autoprumux.evaluation import Evaluation, this_machine
from autoprumux.export._card import render_card
from autoprumux.export._onnx import (
    GRAPH_SELF_CHECK_TOL,
    check_onnx_export,
    check_onnx_tokens,
    write_onnx,
    write_openvino,
)
from autoprumux.models import AnyModel, OpenVinoClassifier, to_precision
from autoprumux.models._persist import CONFIG_FILE, WEIGHTS_FILE

if TYPE_CHECKING:
    from autoprumux.pipeline import PruMuxPipeline

# the largest difference of a reloaded export's logits from the pipeline's own (fp32 and int8
# run the same kernels on the same weights, so they agree far closer than this)
SELF_CHECK_TOL = {"fp32": 1e-4, "int8": 1e-4, "tf32": 1e-3, "bf16": 5e-2, "fp16": 1e-2}
SELF_CHECK_EXAMPLES = 64


@dataclass(frozen=True)
class ExportResult:
    path: Path
    manifest: ExportManifest
    evaluation: Evaluation


def check_out_dir(out: str | Path, force: bool) -> Path:
    """The export target must be a new or empty directory, or, with `force`, an earlier export
    (a directory holding the export manifest) that holds nothing export did not write, in an
    existing writable directory. Checked before any work and again before the rename."""
    p = Path(out).expanduser()
    parent = resolved(p).parent
    if p.exists() and not p.is_dir():
        raise ConfigError(f"--out {str(out)!r} is a file; name a directory to create")
    problem = dir_problem(parent)
    if problem:
        raise ConfigError(f"--out {str(out)!r}: {problem}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"--out {str(out)!r}: {str(parent)!r} is not writable")
    if p.is_dir() and any(p.iterdir()):
        if not force:
            raise ConfigError(
                f"--out {str(out)!r} exists and is not empty; pass --force to replace it, or "
                "choose a new directory"
            )
        if not (p / MANIFEST_FILE).is_file():
            raise ConfigError(
                f"--out {str(out)!r} is not an autoprumux export (no {MANIFEST_FILE}); "
                "--force replaces only earlier exports: choose a new or empty directory"
            )
        theirs = _not_from_export(p)
        if theirs:
            more = f" and {len(theirs) - 10} more" if len(theirs) > 10 else ""
            raise ConfigError(
                f"--out {str(out)!r} holds what export did not write: {', '.join(theirs[:10])}"
                f"{more}; --force replaces a whole earlier export and would delete them: move "
                "them out of the folder, or choose a new directory"
            )
    return p


# what an export holds besides the files its manifest lists (an export written before the
# manifest listed them holds these: its own files and a BERT-like tokenizer's)
EXPORT_FILES = frozenset(
    {
        MANIFEST_FILE,
        CARD_FILE,
        CALIBRATION_FILE,
        WEIGHTS_FILE,
        CONFIG_FILE,
        TOKENIZER_FILE,
        "tokenizer_config.json",
        "vocab.txt",
        "special_tokens_map.json",
        "added_tokens.json",
    }
)


def _not_from_export(directory: Path) -> list[str]:
    """The entries of an earlier export directory that export did not write (a folder is
    shown with a trailing "/"), sorted."""
    try:
        listed = read_json(directory, MANIFEST_FILE).get("files")
    except (ConfigError, AttributeError):  # unreadable: only the fixed names are export's
        listed = None
    ours = EXPORT_FILES | (set(listed) if isinstance(listed, dict) else set())
    return sorted(
        p.name + ("/" if p.is_dir() and not p.is_symlink() else "")
        for p in directory.iterdir()
        if p.name not in ours or p.is_symlink() or not p.is_file()
    )


def export_model(
    pipe: PruMuxPipeline,
    config: Candidate,
    out: str | Path,
    *,
    throughput: ThroughputConfig | None = None,
    source: ExportSource | None = None,
    force: bool = False,
    command: str = "",
    model_format: str | None = None,
) -> ExportResult:
    """Build (or take from the cache), measure and write `config` as a deployable directory at
    `out` (see the module docstring), in `model_format` (`deploy.MODEL_FORMATS`; default: the
    format it is measured in, `deploy.default_format`)."""
    model_format = model_format or default_format(config)
    target = check_out_dir(out, force)
    device = str(pipe.device)
    check_precision(config.precision, device)
    check_model_format(model_format, config)
    if model_format != "torch" and not getattr(pipe.tokenizer, "is_fast", False):
        raise ConfigError(
            f"--format {model_format}: the tokenizer of {pipe.base.name!r} is not a fast "
            f"tokenizer (no {TOKENIZER_FILE}), which an export run without torch tokenizes "
            "with; export --format torch with --precision fp32 or int8"
        )
    tp = throughput or ThroughputConfig(device=device)
    model: AnyModel
    ev, measured = pipe.evaluate_model(config, throughput=tp)
    model = pipe.fp32_model(config)  # the fp32 model `evaluate` converted and measured
    manifest = ExportManifest(
        task=pipe.task.name,
        label_names=tuple(pipe.data.task.label_names),
        pair=pipe.task.pair,
        max_seq_len=pipe.max_seq_len,
        config=config,
        base_model=pipe.model_id,
        measurement=_measurement(ev, pipe.dev_size),
        machine=machine_info(device),
        created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        command=command,
        source=source or ExportSource(),
        model_format=model_format,
    )
    remove_stale(target)
    tmp, lock = _locked_tmpdir(target)
    try:
        calibration = None
        converted = None
        if model_format == "onnx":  # the fp32 model as a graph, and nothing torch reads
            write_onnx(model, tmp, pipe.max_seq_len)
        elif model_format == "openvino":  # the graph `evaluate` measured
            converted = measured
            assert isinstance(converted, OpenVinoClassifier)  # an OpenVINO precision's
            write_openvino(converted, tmp)
        else:
            model.save(tmp)  # fp32 weights: the precision is applied when loaded (see manifest)
            # the ranges `evaluate` calibrated int8 with (the same seeded texts, the same model)
            calibration = pipe.int8_calibration(model)
            (tmp / CALIBRATION_FILE).write_text(json.dumps(calibration.to_dict(), indent=1))
        pipe.tokenizer.save_pretrained(str(tmp))
        (tmp / CARD_FILE).write_text(render_card(manifest, model))
        # last: the size and sha256 of every other file, which `load` checks
        manifest = replace(manifest, files=record_files(tmp))
        manifest.write(tmp)
        if converted is None:
            converted = to_precision(model, config.precision, calibration=calibration)
        _self_check(tmp, converted, pipe, config.precision, model_format)
        _publish(tmp, target, force)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        os.close(lock)
    return ExportResult(target, manifest, ev)


def _locked_tmpdir(target: Path) -> tuple[Path, int]:
    """A new temporary directory beside `target`, with an exclusive lock held on it (the
    returned descriptor) for as long as this export lives: the lock is how `remove_stale`
    tells a live export's folder from a dead one's (the kernel drops it when the process
    dies, even by SIGKILL)."""
    for _ in range(10):
        tmp = Path(tempfile.mkdtemp(dir=target.resolve().parent, prefix=f".{target.name}.tmp-"))
        fd = os.open(tmp, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            # another export's `remove_stale` may have taken it in the instant before the lock
            if os.stat(tmp).st_ino == os.fstat(fd).st_ino:
                return tmp, fd
        except (BlockingIOError, FileNotFoundError):
            pass
        os.close(fd)
    raise RuntimeError(f"could not lock a temporary directory beside {str(target)!r}")


def remove_stale(target: Path) -> None:
    """Delete what exports to `target` that died (SIGKILL, a crash, a power cut) left beside
    it: their temporary directories (no live process holds their lock) and, once `target`
    holds an export, earlier exports moved aside by a replacement that did not finish."""
    parent = target.resolve().parent
    name = glob.escape(target.name)
    for d in parent.glob(f".{name}.tmp-*"):
        if d.is_symlink() or not d.is_dir():
            continue
        try:
            fd = os.open(d, os.O_RDONLY)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # a live export is writing it
            os.close(fd)
            continue
        try:
            shutil.rmtree(d, ignore_errors=True)
        finally:
            os.close(fd)
    if (target / MANIFEST_FILE).is_file():
        for d in parent.glob(f".{name}.old-*"):
            if d.is_dir() and not d.is_symlink():
                shutil.rmtree(d, ignore_errors=True)


def _measurement(ev: Evaluation, dev_examples: int) -> Measurement:
    c, b, tp = ev.candidate, ev.baseline, ev.throughput_config
    return Measurement(
        metric_name=ev.metric_name,
        metric=c.metric,
        baseline_metric=b.metric,
        accuracy=c.accuracy,
        baseline_accuracy=b.accuracy,
        throughput=c.throughput,
        baseline_throughput=b.throughput,
        sparsity=c.sparsity,
        dev_examples=dev_examples,
        throughput_batch=tp.batch_size,
        throughput_seq_len=tp.seq_len,
        device=ev.device,
        pos_label=ev.pos_label,
        baseline_training=ev.baseline_convergence,
        validation_metric=c.validation_metric,
        baseline_validation_metric=b.validation_metric,
        validation_examples=0 if ev.validation_noise is None else ev.validation_noise.examples,
        validation_split="validation" if ev.validation_noise is None else ev.validation_noise.split,
        validation_loss_se=ev.validation_loss_se,
        stage_training=[st.brief(ev.metric_label) for st in ev.stages],
    )


def check_model_format(model_format: str, config: Candidate) -> None:
    """`model_format` is one `deploy.MODEL_FORMATS` names, and one `config` exports to (ONNX:
    `export._onnx.check_onnx_export`, with its packages installed)."""
    if model_format not in MODEL_FORMATS:
        raise ConfigError(
            f"--format {model_format!r} is not one of {list(MODEL_FORMATS)}; e.g. --format onnx"
        )
    if model_format == "onnx":
        check_onnx_export(config)
    problem = format_problem(config, model_format)
    if problem:
        raise ConfigError(f"--format {model_format}: {config.describe()}: {problem}")


def _self_check(
    directory: Path, model: AnyModel, pipe: PruMuxPipeline, precision: str, model_format: str
) -> None:
    """The directory, loaded as a user would, must predict what `model` (the exported model,
    converted to `precision` with the exported calibration) predicts for the first dev examples
    (grouped alike): a wrong tokenizer, label count, architecture or calibration file is caught
    here, before the directory is published. An ONNX export (run by ONNX Runtime on the CPU)
    must also tokenize those examples exactly as the pipeline did."""
    import torch

    from autoprumux.training import predict

    graph = model_format != "torch"  # ONNX Runtime or OpenVINO, on the CPU, without torch
    pred = load(directory, device="cpu" if graph else str(pipe.device))
    k = min(len(pipe.dev_items), SELF_CHECK_EXAMPLES)
    examples = pipe.data.dev[:k]
    if graph:
        check_onnx_tokens(pred.tokenizer, examples, pipe.dev_items[:k], pipe.max_seq_len)
    texts = [(e.text_a, e.text_b) if pipe.task.pair else e.text_a for e in examples]
    got = torch.as_tensor(pred.logits(texts))  # type: ignore[arg-type]
    want = predict(
        model,
        pipe.dev_items[:k],
        batch_size=pred.batch_size,
        device=pipe.device,
    )
    diff = float((got - want).abs().max()) if k else 0.0
    tol = GRAPH_SELF_CHECK_TOL[model_format] if graph else SELF_CHECK_TOL[precision]
    if diff > tol:
        what = {"onnx": "ONNX model (run by ONNX Runtime)", "openvino": "OpenVINO model"}.get(
            model_format, "exported model"
        )
        raise RuntimeError(
            f"the {what} does not reproduce the pipeline's logits (largest difference "
            f"{diff:.2e}, more than {tol:g}); nothing was written"
        )


def _publish(tmp: Path, target: Path, force: bool) -> None:
    """Rename the finished directory into place (an earlier export is moved aside first and
    deleted after, so the target always holds one whole export)."""
    check_out_dir(target, force)  # another process may have written there meanwhile
    if target.is_dir() and any(target.iterdir()):
        old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
        # Ctrl-C or SIGTERM between the two renames would leave no export at the target:
        # they are held until both are done
        with _signals_held():
            os.rename(target, old)
            os.rename(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            target.rmdir()  # empty: rename() would replace it too, but not on every system
        os.rename(tmp, target)


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    held = {signal.SIGINT, signal.SIGTERM}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def machine_info(device: str) -> dict[str, str]:
    """Where a measurement ran (`evaluation.Machine`), with the library versions."""
    import transformers

    m = this_machine(device)
    info = {
        "cpu": f"{m.cpu} ({m.cpu_id}; {', '.join(m.isa) or 'no listed ISA extensions'})",
        "cpu_threads": str(m.threads),
        "torch": m.torch,
        "transformers": transformers.__version__,
        "autoprumux": m.autoprumux,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine_key": m.key,
    }
    if m.gpu:
        info["gpu"] = m.gpu
    return info
