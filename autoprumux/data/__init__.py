"""Task data: GLUE-format loaders and batching."""

from autoprumux.data._batching import Encoded, batches, collate, encode, infinite_batches
from autoprumux.data._corpus import check_corpus, encode_corpus, warmup_texts
from autoprumux.data._glue import (
    TASKS,
    Example,
    TaskData,
    TaskSpec,
    get_task,
    load_task,
    resolve_data_dir,
)

__all__ = [
    "TASKS",
    "Encoded",
    "Example",
    "TaskData",
    "TaskSpec",
    "batches",
    "check_corpus",
    "encode_corpus",
    "collate",
    "encode",
    "get_task",
    "infinite_batches",
    "load_task",
    "resolve_data_dir",
    "warmup_texts",
]
