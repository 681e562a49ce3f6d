"""What every exported model's predictor shares, whatever runs it (torch: `Predictor`, ONNX
Runtime: `OnnxPredictor`), without torch: the inputs it takes and how it checks them, how it
cuts them into batches, and the `Predictions` it answers with.

A multiplexed model (N > 1) is used like any other: the predictor takes the inputs in order, N
at a time, and a last incomplete group gets dummy rows (the model adds them, see
`MuxSequenceClassifier.layout`). Inputs that share a group are mixed in one forward pass, so an
input's probabilities depend slightly on its group mates: the same list in the same order
always gives the same answers, and the dev metric on the model card is the mean over several
seeded orders.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from autoprumux.data import Example
from autoprumux.deploy._manifest import ExportManifest
from autoprumux.errors import ConfigError

# the pipeline's own dev batch (training.predict); any multiple of N gives the same groups
DEFAULT_BATCH = 64
Text = str | tuple[str, str]


@dataclass(frozen=True)
class Predictions:
    """Per input: the predicted class and the probability of every class (in `label_names`
    order)."""

    label_names: tuple[str, ...]
    label_ids: list[int]  # the argmax of the logits (as the pipeline's metrics take it)
    probabilities: list[list[float]]

    @property
    def labels(self) -> list[str]:
        return [self.label_names[i] for i in self.label_ids]

    def __len__(self) -> int:
        return len(self.probabilities)

    def columns(self, prefix: str = "") -> dict[str, list[Any]]:
        """The predictions as table columns (batch scoring and the served model): `label`, its
        `probability`, and `probability_<name>` per class, each name after `prefix`."""
        ids = self.label_ids
        cols: dict[str, list[Any]] = {
            f"{prefix}label": [self.label_names[i] for i in ids],
            f"{prefix}probability": [p[i] for i, p in zip(ids, self.probabilities, strict=True)],
        }
        for j, name in enumerate(self.label_names):
            cols[f"{prefix}probability_{name}"] = [p[j] for p in self.probabilities]
        return cols

    def records(self) -> list[dict[str, Any]]:
        """One dict per input: label, its probability and every class's probability."""
        return [
            {
                "label": self.label_names[i],
                "probability": p[i],
                "probabilities": dict(zip(self.label_names, p, strict=True)),
            }
            for i, p in zip(self.label_ids, self.probabilities, strict=True)
        ]


class PredictorBase:
    """An exported model's manifest and batch size: the inputs it takes (`examples`) and the
    batches it runs them in (`chunks`). Subclasses run the model (`logits`, `predict`)."""

    def __init__(self, manifest: ExportManifest, *, batch_size: int = DEFAULT_BATCH):
        n = manifest.n
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size ({batch_size!r}) must be a positive integer, e.g. 64")
        self.manifest = manifest
        # whole groups of N per batch, so inputs i*N .. i*N+N-1 always share a forward pass
        self.batch_size = max(n, batch_size // n * n)

    @property
    def label_names(self) -> tuple[str, ...]:
        return self.manifest.label_names

    @property
    def n(self) -> int:
        return self.manifest.n

    @property
    def pair(self) -> bool:
        return self.manifest.pair

    def examples(self, texts: Sequence[Text]) -> list[Example]:
        """`texts` as unlabelled examples: strings, or (text, text_pair) tuples for a pair task
        (a ConfigError naming the first input that is neither)."""
        if isinstance(texts, str | bytes) or not isinstance(texts, Sequence):
            raise ConfigError(
                f"predict takes a list of texts, got {type(texts).__name__}; wrap a single "
                "text in a list: predict([text])"
            )
        out = []
        for i, t in enumerate(texts):
            if self.pair:
                if (
                    not isinstance(t, tuple | list)
                    or len(t) != 2
                    or not all(isinstance(x, str) for x in t)
                ):
                    raise ConfigError(
                        f"input {i}: task {self.manifest.task} classifies pairs; give "
                        f"(text, text_pair) tuples of two strings, got {_short(t)}"
                    )
                out.append(Example(t[0], t[1], 0))
            else:
                if not isinstance(t, str):
                    raise ConfigError(
                        f"input {i}: task {self.manifest.task} classifies single texts; give "
                        f"strings, got {_short(t)}"
                    )
                out.append(Example(t, None, 0))
        return out

    def chunks(self, texts: Sequence[Text]) -> Iterator[list[Example]]:
        """`texts` checked (`examples`) and cut into the batches the model runs, in order."""
        examples = self.examples(texts)
        for s in range(0, len(examples), self.batch_size):
            yield examples[s : s + self.batch_size]


def _short(v: Any, n: int = 60) -> str:
    s = repr(v)
    return s if len(s) <= n else s[:n] + "..."
