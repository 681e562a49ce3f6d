"""A fine-tuned sequence classifier given as the model: how it is recognised, how its labels are
matched to a task's classes, and how it becomes a `MuxSequenceClassifier` with the same logits.

A checkpoint is a classifier when its config's `architectures` names a
`*ForSequenceClassification`, or its weights hold `classifier.*`. Its labels are its
`id2label`, in the head's row order. They match a task's class names by name (case and
surrounding spaces aside); transformers' generic names LABEL_0, LABEL_1, ... carry no name and
match the classes by index when the counts agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autoprumux.errors import ConfigError

if TYPE_CHECKING:
    from autoprumux.models._mux import MuxSequenceClassifier

# problem types whose head does not score one class per row
UNSUPPORTED_PROBLEMS = ("regression", "multi_label_classification")


def _weights_hold_head(path: Path) -> bool:
    """Whether a checkpoint directory's weights hold a `classifier.*` tensor."""
    import torch
    from safetensors import safe_open

    def is_head(key: str) -> bool:
        return key.removeprefix("bert.").startswith("classifier.")

    for f in sorted(path.glob("*.safetensors")):
        with safe_open(str(f), framework="pt") as st:
            if any(is_head(k) for k in st.keys()):  # noqa: SIM118 - a safe_open, not a dict
                return True
    for f in sorted(path.glob("*.bin")):
        sd = torch.load(f, map_location="cpu", weights_only=True, mmap=True)
        if any(is_head(k) for k in sd):
            return True
    return False


def classifier_labels(cfg: Any, path: Path | None, name: str) -> tuple[str, ...]:
    """The head's labels in row order when the checkpoint is a sequence classifier, else ()."""
    archs = getattr(cfg, "architectures", None) or ()
    named = any(str(a).endswith("ForSequenceClassification") for a in archs)
    if not named and not (path is not None and _weights_hold_head(path)):
        return ()
    problem = getattr(cfg, "problem_type", None)
    if problem in UNSUPPORTED_PROBLEMS:
        raise ConfigError(
            f"model {name!r} is a {problem} head (problem_type), not a single-label classifier; "
            "pass a single-label sequence classifier, or its base encoder to fine-tune one here"
        )
    id2label = {int(k): str(v) for k, v in (getattr(cfg, "id2label", None) or {}).items()}
    return tuple(id2label.get(i, f"LABEL_{i}") for i in range(int(cfg.num_labels)))


def head_rows(labels: Sequence[str], classes: Sequence[str], model: str) -> tuple[int, ...]:
    """For each of the task's classes in order, the head's row that scores it. A count or name
    that does not match is refused, listing both."""
    both = f"the model's labels (id2label) are {list(labels)}, the task's classes {list(classes)}"
    fix = (
        "give a classifier fine-tuned on these classes (its id2label naming them), or its base "
        "encoder to fine-tune one here"
    )
    if len(labels) != len(classes):
        raise ConfigError(
            f"model {model!r} classifies {len(labels)} labels but the task has {len(classes)} "
            f"classes: {both}; {fix}"
        )
    if list(labels) == [f"LABEL_{i}" for i in range(len(labels))]:  # unnamed: by index
        return tuple(range(len(labels)))

    def key(s: str) -> str:
        return str(s).strip().casefold()

    rows = {key(label): i for i, label in enumerate(labels)}
    unknown = [c for c in classes if key(c) not in rows]
    if len(rows) != len(labels) or unknown:
        what = f"no label named {unknown}" if unknown else "labels that repeat a name"
        raise ConfigError(f"model {model!r} has {what}: {both}; {fix}")
    return tuple(rows[key(c)] for c in classes)


def load_classifier(path: str, config: Any, rows: Sequence[int]) -> MuxSequenceClassifier:
    """The checkpoint's encoder, pooler and head as a `MuxSequenceClassifier` (N = 1) whose
    logits are the checkpoint's, their columns in the order `rows` gives (`head_rows`)."""
    import torch
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    from autoprumux.models._encoder import Encoder
    from autoprumux.models._mux import MuxSequenceClassifier

    hf_logging.disable_progress_bar()
    hf, info = AutoModelForSequenceClassification.from_pretrained(path, output_loading_info=True)
    if info["missing_keys"]:  # transformers would start them at random: not the user's model
        raise ConfigError(
            f"model {path!r} lacks {sorted(info['missing_keys'])[:5]}: it cannot be used as is; "
            "pass a complete sequence classifier, or its base encoder to fine-tune one here"
        )
    sd = hf.state_dict()
    encoder = Encoder(config)
    encoder.load_bert_state_dict(sd)
    model = MuxSequenceClassifier(encoder, num_labels=len(rows))
    order = torch.tensor(list(rows))
    with torch.no_grad():
        model.classifier.weight.copy_(sd["classifier.weight"][order])
        model.classifier.bias.copy_(sd["classifier.bias"][order])
    return model.eval()
