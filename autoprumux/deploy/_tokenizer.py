"""The tokenizer of an ONNX export without transformers (which would import torch): the export's
`tokenizer.json` run by the `tokenizers` library, called the way `data.encode` calls a
transformers fast tokenizer, so both give the same tokens. A transformers fast tokenizer is
that same `tokenizers.Tokenizer` with its truncation and padding set per call, as here.

The ONNX export checks, before it is published, that this tokenizer gives the pipeline's tokens
for its check texts (`export._onnx`): a tokenizer that differs is refused there, not found out
by a user."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from autoprumux.deploy._files import AGAIN, local_file, read_json
from autoprumux.deploy._manifest import ExportManifest
from autoprumux.errors import ConfigError

# written by a transformers fast tokenizer's save_pretrained: the whole tokenizer in one file
TOKENIZER_FILE = "tokenizer.json"
# where save_pretrained writes the tokenizer's settings (here: its truncation side)
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"


class TokenizedBatch(dict):
    """What `data.encode` reads of a transformers BatchEncoding: `input_ids` and
    `token_type_ids` per text, `encodings`, and which text each token is of (`sequence_ids`)."""

    def __init__(self, encodings: list[Any]):
        super().__init__(
            input_ids=[e.ids for e in encodings], token_type_ids=[e.type_ids for e in encodings]
        )
        self.encodings = encodings

    def sequence_ids(self, i: int) -> list[int | None]:
        return self.encodings[i].sequence_ids


class JsonTokenizer:
    """A `tokenizers.Tokenizer` called as `data.encode` calls a transformers fast tokenizer:
    special tokens added, no padding, truncation (longest first) to `max_length` when asked."""

    def __init__(self, backend: Any, *, truncation_side: str = "right"):
        self.backend = backend
        self.truncation_side = truncation_side
        backend.no_padding()

    def __call__(
        self,
        text: list[str],
        text_pair: list[str] | None = None,
        *,
        truncation: bool = False,
        max_length: int | None = None,
        padding: bool = False,
        verbose: bool = True,
    ) -> TokenizedBatch:
        if padding or (truncation and max_length is None):
            raise ValueError("JsonTokenizer pads nothing and truncates to a given max_length only")
        if truncation:
            self.backend.enable_truncation(
                max_length, stride=0, strategy="longest_first", direction=self.truncation_side
            )
        else:
            self.backend.no_truncation()
        inputs = list(zip(text, text_pair, strict=True)) if text_pair is not None else text
        return TokenizedBatch(self.backend.encode_batch(inputs, add_special_tokens=True))


def load_json_tokenizer(directory: Path, manifest: ExportManifest) -> JsonTokenizer:
    """The tokenizer of the export in `directory` from its `TOKENIZER_FILE` (listed in the
    manifest, and verified by the caller); its truncation side from `TOKENIZER_CONFIG_FILE`."""
    from tokenizers import Tokenizer

    if TOKENIZER_FILE not in manifest.files:
        raise ConfigError(
            f"{str(directory)!r}: the manifest lists no {TOKENIZER_FILE}, which an ONNX export "
            f"tokenizes with; {AGAIN}"
        )
    path = local_file(directory, TOKENIZER_FILE)
    try:
        backend = Tokenizer.from_file(str(path))
    except Exception as e:  # noqa: BLE001 - the Rust library raises its own exception types
        first = (str(e).splitlines() or [type(e).__name__])[0][:200]
        raise ConfigError(
            f"{str(directory / TOKENIZER_FILE)!r} does not load ({type(e).__name__}: {first}); "
            + AGAIN
        ) from None
    settings = (
        read_json(directory, TOKENIZER_CONFIG_FILE)
        if TOKENIZER_CONFIG_FILE in manifest.files
        else {}
    )
    side = settings.get("truncation_side", "right") if isinstance(settings, dict) else "right"
    if side not in ("left", "right"):
        raise ConfigError(
            f"{str(directory / TOKENIZER_CONFIG_FILE)!r}: truncation_side {side!r} is not "
            f"'left' or 'right'; {AGAIN}"
        )
    return JsonTokenizer(backend, truncation_side=side)
