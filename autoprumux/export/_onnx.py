"""The ONNX format of an export (`export --format onnx`): which configurations it takes, the
packages it needs, writing the fp32 model as `model.onnx` with torch.onnx, and what the
export's self-check adds for it (docs/export.md).

The graph is made by torch.onnx's exporter (torch.export, then ONNX Script), with the batch
and sequence axes dynamic, so one file takes any batch of any length up to max_seq_len. A
pruned model exports as it is: each layer's own heads and FFN units are its matrices' shapes.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import logging
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

from autoprumux.config import Candidate
from autoprumux.data import Encoded, Example, encode
from autoprumux.deploy import ONNX_FILE
from autoprumux.deploy._manifest import ONNX_INSTALL, onnx_problem
from autoprumux.deploy._onnx import ONNX_INPUTS, ONNX_OUTPUT
from autoprumux.deploy._tokenizer import JsonTokenizer
from autoprumux.errors import ConfigError
from autoprumux.models import AnyModel

# what exporting needs besides torch: the ONNX format, torch.onnx's exporter (ONNX Script) and
# the runtime the self-check loads the directory with
ONNX_EXPORT_PACKAGES = ("onnx", "onnxscript", "onnxruntime")
# the largest difference of the ONNX export's logits from the torch model's: ONNX Runtime fuses
# the attention, LayerNorm and GELU kernels, which round differently from torch's in fp32
ONNX_SELF_CHECK_TOL = 1e-4


def check_onnx_export(config: Candidate) -> None:
    """Refuse, before any work, a configuration ONNX cannot hold (`deploy.onnx_problem`) or a
    missing package (with the install line)."""
    problem = onnx_problem(config)
    if problem:
        raise ConfigError(f"--format onnx: {config.describe()}: {problem}")
    missing = []
    for name in ONNX_EXPORT_PACKAGES:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise ConfigError(
            f"--format onnx needs {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} "
            f"not installed: {ONNX_INSTALL}"
        )


def write_onnx(model: AnyModel, directory: Path, max_seq_len: int) -> Path:
    """`model` (fp32) as `ONNX_FILE` in `directory`: inputs `ONNX_INPUTS` (int64, batch x
    sequence, both dynamic, sequence up to `max_seq_len`), output `ONNX_OUTPUT`. A copy is
    exported, so the measured model is left as it was."""
    import torch

    module = copy.deepcopy(model).float().cpu().eval()
    # example shapes of at least 2: torch.export specializes an axis it sees as 0 or 1
    ids = torch.ones((2, min(8, max_seq_len)), dtype=torch.long)
    axes = {0: torch.export.Dim("batch"), 1: torch.export.Dim("sequence", max=max_seq_len)}
    path = directory / ONNX_FILE
    try:
        with _exporter_quiet():
            torch.onnx.export(
                module,
                (ids, torch.ones_like(ids), torch.zeros_like(ids)),
                str(path),
                dynamo=True,
                input_names=list(ONNX_INPUTS),
                output_names=[ONNX_OUTPUT],
                dynamic_shapes=(axes, axes, axes),
                external_data=False,  # one file, listed and verified like every other
                verbose=False,
            )
    except Exception as e:  # noqa: BLE001 - torch.export and ONNX Script raise many types
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        raise ConfigError(
            f"torch.onnx could not export this model ({type(e).__name__}: {first}); export "
            "--format torch"
        ) from None
    return path


@contextlib.contextmanager
def _exporter_quiet() -> Iterator[None]:
    """torch.onnx's exporter warns of what it skips (torchvision's operators, renamed axes):
    nothing a user of the export can act on."""
    log = logging.getLogger("torch.onnx")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        log.setLevel(level)


def check_onnx_tokens(
    tokenizer: JsonTokenizer,
    examples: Sequence[Example],
    items: Sequence[Encoded],
    max_seq_len: int,
) -> None:
    """The ONNX export's tokenizer (`tokenizer.json` without transformers) must give the
    pipeline's tokens (`items`) for `examples`, or the export is refused: its labels would
    differ from the measured model's for reasons no logit tolerance shows."""
    got = encode(examples, tokenizer, max_seq_len)
    for i, (a, b) in enumerate(zip(got, items, strict=True)):
        if (a.input_ids, a.token_type_ids) != (b.input_ids, b.token_type_ids):
            raise ConfigError(
                f"--format onnx: the exported tokenizer.json, run without transformers, "
                f"tokenizes dev example {i} differently from the model's tokenizer; export "
                "--format torch"
            )
