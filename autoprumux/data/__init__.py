"""Task data: GLUE-format loaders, the user's own data (`DataSource`, `load_task_data`), the
warm-up corpus, tokenisation and padding (`_encoding`), batching, and how much of a text is
read (`_texts`).

The names are imported on first use (PEP 562): a search space holding a `DataSource` is read,
and an ONNX export predicts, without loading torch (which only `_batching` and the corpus
need)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from autoprumux._lazy import lazy_exports

_BATCHING = "autoprumux.data._batching"
_CORPUS = "autoprumux.data._corpus"
_ENCODING = "autoprumux.data._encoding"
_GLUE = "autoprumux.data._glue"
_SOURCE = "autoprumux.data._source"
_TEXTS = "autoprumux.data._texts"
_VALIDATION = "autoprumux.data._validation"

__getattr__ = lazy_exports(
    __name__,
    {
        "Encoded": _ENCODING,
        "encode": _ENCODING,
        "pad": _ENCODING,
        "UNLABELED": _BATCHING,
        "batches": _BATCHING,
        "collate": _BATCHING,
        "infinite_batches": _BATCHING,
        "CHARS_PER_TOKEN": _TEXTS,
        "MAX_VALUE_CHARS": _TEXTS,
        "clip_text": _TEXTS,
        "max_text_chars": _TEXTS,
        "check_corpus": _CORPUS,
        "encode_corpus": _CORPUS,
        "warmup_texts": _CORPUS,
        "TASKS": _GLUE,
        "Example": _GLUE,
        "TaskData": _GLUE,
        "TaskSpec": _GLUE,
        "get_task": _GLUE,
        "load_task": _GLUE,
        "metric_label": _GLUE,
        "resolve_data_dir": _GLUE,
        "DATA_KEY_DEFAULTS": _SOURCE,
        "MAX_DEV_SPLIT_ROWS": _SOURCE,
        "METRICS": _SOURCE,
        "DataSource": _SOURCE,
        "carve_dev_split": _SOURCE,
        "check_metric": _SOURCE,
        "check_pos_label": _SOURCE,
        "load_task_data": _SOURCE,
        "resolve_task": _SOURCE,
        "VALIDATION_SEED": _VALIDATION,
        "STOPPING_SEED": _VALIDATION,
        "validation_size": _VALIDATION,
        "validation_split": _VALIDATION,
    },
)

if TYPE_CHECKING:
    from autoprumux.data._batching import UNLABELED, batches, collate, infinite_batches
    from autoprumux.data._corpus import check_corpus, encode_corpus, warmup_texts
    from autoprumux.data._encoding import Encoded, encode, pad
    from autoprumux.data._glue import (
        TASKS,
        Example,
        TaskData,
        TaskSpec,
        get_task,
        load_task,
        metric_label,
        resolve_data_dir,
    )
    from autoprumux.data._source import (
        DATA_KEY_DEFAULTS,
        MAX_DEV_SPLIT_ROWS,
        METRICS,
        DataSource,
        carve_dev_split,
        check_metric,
        check_pos_label,
        load_task_data,
        resolve_task,
    )
    from autoprumux.data._texts import CHARS_PER_TOKEN, MAX_VALUE_CHARS, clip_text, max_text_chars
    from autoprumux.data._validation import (
        STOPPING_SEED,
        VALIDATION_SEED,
        validation_size,
        validation_split,
    )

__all__ = [
    "CHARS_PER_TOKEN",
    "DATA_KEY_DEFAULTS",
    "MAX_DEV_SPLIT_ROWS",
    "MAX_VALUE_CHARS",
    "METRICS",
    "TASKS",
    "UNLABELED",
    "STOPPING_SEED",
    "VALIDATION_SEED",
    "DataSource",
    "Encoded",
    "Example",
    "TaskData",
    "TaskSpec",
    "batches",
    "carve_dev_split",
    "check_corpus",
    "clip_text",
    "check_metric",
    "check_pos_label",
    "collate",
    "encode",
    "encode_corpus",
    "get_task",
    "infinite_batches",
    "load_task",
    "load_task_data",
    "max_text_chars",
    "metric_label",
    "pad",
    "resolve_data_dir",
    "resolve_task",
    "validation_size",
    "validation_split",
    "warmup_texts",
]
