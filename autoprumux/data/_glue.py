"""GLUE-format loaders (SST-2, CoLA, MRPC, QNLI) from a local directory or Hugging Face `datasets`.

A task is a list of `Example`s per split. Nothing is dropped silently: a malformed row raises
with its file and line number.
"""

from __future__ import annotations

import csv
import hashlib
import math
import os
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from autoprumux.errors import ConfigError, DataNotFoundError

csv.field_size_limit(10_000_000)


@dataclass(frozen=True)
class Example:
    text_a: str
    text_b: str | None
    label: int


def metric_label(metric: str, pos_label: str | None) -> str:
    """A metric as printed and on model cards: "f1 (positive class 'fraud')" when f1 has a
    positive class, else its name."""
    return metric if pos_label is None else f"{metric} (positive class {pos_label!r})"


@dataclass(frozen=True)
class TaskSpec:
    name: str
    glue_dir: str  # folder name inside a GLUE-format directory
    num_labels: int
    pair: bool
    metric: str  # primary dev metric: "accuracy", "f1" or "mcc"
    hf_config: str  # config name of the `glue` dataset on the hub
    label_names: tuple[str, ...]  # label_names[i] names class i (in exports and predictions)
    # the class f1 scores as positive (two classes): GLUE's label 1; the user's data: the
    # minority class of train (see data._source), or the one `pos_label` names
    positive: int = 1

    @property
    def is_glue(self) -> bool:
        """A built-in GLUE task (the user's data has no GLUE folder)."""
        return bool(self.glue_dir)

    @property
    def pos_label(self) -> str | None:
        """The name of the class f1 scores as positive, None unless the metric is f1 over two
        classes (accuracy and MCC have none; f1 over more classes is macro-F1)."""
        if self.metric != "f1" or self.num_labels != 2:
            return None
        return self.label_names[self.positive]


TASKS: dict[str, TaskSpec] = {  # one spec per name in autoprumux.config.TASK_NAMES
    "sst2": TaskSpec("sst2", "SST-2", 2, False, "accuracy", "sst2", ("negative", "positive")),
    "cola": TaskSpec("cola", "CoLA", 2, False, "mcc", "cola", ("unacceptable", "acceptable")),
    "mrpc": TaskSpec("mrpc", "MRPC", 2, True, "accuracy", "mrpc", ("not_equivalent", "equivalent")),
    "qnli": TaskSpec("qnli", "QNLI", 2, True, "accuracy", "qnli", ("entailment", "not_entailment")),
}

_ALIASES = {"sst-2": "sst2", "sst": "sst2", "cola": "cola", "mrpc": "mrpc", "qnli": "qnli"}


def get_task(name: str) -> TaskSpec:
    key = str(name).strip().lower()
    key = _ALIASES.get(key, key)
    if key not in TASKS:
        raise ConfigError(
            f"unknown task {name!r}; choose one of {sorted(TASKS)} (e.g. --task sst2)"
        )
    return TASKS[key]


@dataclass(frozen=True)
class TaskData:
    task: TaskSpec
    train: tuple[Example, ...]
    dev: tuple[Example, ...]
    source: str  # where the data came from (directory, file, "hf:glue/<config>", "hf:NAME")
    # how dev was carved from train when the data has no dev split ("" when it has one)
    dev_split: str = ""

    def descriptors(self) -> dict[str, float]:
        """What the meta-model knows of the task (studies record them; see meta.FEATURES for
        those it reads)."""
        counts = Counter(ex.label for ex in self.train)
        smallest = min(counts.get(i, 0) for i in range(self.task.num_labels))
        return {
            "task_num_labels": self.task.num_labels,
            "task_pair": int(self.task.pair),
            "task_mcc": int(self.task.metric == "mcc"),
            "task_log_train": round(math.log(max(1, len(self.train))), 6),
            "task_f1": int(self.task.metric == "f1"),
            # the label balance: 1/num_labels when balanced, near 0 for a rare class
            "task_minority_share": round(smallest / max(1, len(self.train)), 6),
        }

    def fingerprint(self) -> str:
        """A short content hash of the train and dev rows, and for the user's data of its class
        names and dev split too (cache keys depend on the data)."""
        h = hashlib.sha256()
        for split in (self.train, self.dev):
            for ex in split:
                h.update(f"{ex.text_a}\t{ex.text_b}\t{ex.label}\n".encode())
            h.update(b"--split--")
        if not self.task.is_glue:  # GLUE keys stay as they were: their cache entries still hit
            h.update(repr((self.task.label_names, self.dev_split)).encode())
        return h.hexdigest()[:16]


def _project_default_dirs() -> list[Path]:
    here = Path(__file__).resolve()
    # ../shared/data/glue relative to the project root, and relative to the working directory
    cands = [
        here.parents[2].parent / "shared" / "data" / "glue",
        Path.cwd().parent / "shared" / "data" / "glue",
    ]
    cands.append(Path.cwd() / "shared" / "data" / "glue")
    out: list[Path] = []
    for c in cands:
        if c not in out:
            out.append(c)
    return out


def resolve_data_dir(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """The GLUE-format directory: explicit argument, else $AUTOPRUMUX_DATA, else ../shared/data/glue."""
    looked: list[str] = []
    if data_dir is not None:
        p = Path(data_dir).expanduser()
        if p.is_dir():
            return p
        raise DataNotFoundError(
            f"data directory {str(p)!r} does not exist; pass --data-dir pointing at a GLUE-format "
            "directory (with SST-2/, CoLA/, MRPC/, QNLI/) or set AUTOPRUMUX_DATA"
        )
    env = os.environ.get("AUTOPRUMUX_DATA")
    if env:
        p = Path(env).expanduser()
        if p.is_dir():
            return p
        looked.append(f"$AUTOPRUMUX_DATA={env}")
    for c in _project_default_dirs():
        if c.is_dir():
            return c
        looked.append(str(c))
    raise DataNotFoundError(
        "no GLUE-format data directory found; looked in: "
        + ", ".join(looked)
        + ". Pass --data-dir DIR (or set AUTOPRUMUX_DATA=DIR) to a directory holding SST-2/, CoLA/, "
        "MRPC/, QNLI/ TSV files, or use --data-source hf when online"
    )


def _read_tsv(path: Path, has_header: bool) -> list[list[str]]:
    if not path.is_file():
        raise DataNotFoundError(
            f"missing data file {str(path)!r}; point --data-dir (or AUTOPRUMUX_DATA) at a GLUE-format directory"
        )
    with path.open(encoding="utf-8-sig", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    return rows[1:] if has_header else rows


def _parse_rows(task: TaskSpec, path: Path) -> list[Example]:
    out: list[Example] = []
    if task.name == "sst2":
        for i, r in enumerate(_read_tsv(path, True), start=2):
            if len(r) != 2 or r[1] not in ("0", "1"):
                raise DataNotFoundError(
                    f"{path}:{i}: expected 'sentence<TAB>label(0/1)', got {r!r}"
                )
            out.append(Example(r[0].strip(), None, int(r[1])))
    elif task.name == "cola":
        for i, r in enumerate(_read_tsv(path, False), start=1):
            if len(r) != 4 or r[1] not in ("0", "1"):
                raise DataNotFoundError(
                    f"{path}:{i}: expected 4 CoLA columns with label 0/1, got {r!r}"
                )
            out.append(Example(r[3].strip(), None, int(r[1])))
    elif task.name == "mrpc":
        for i, r in enumerate(_read_tsv(path, True), start=2):
            if len(r) != 5 or r[0] not in ("0", "1"):
                raise DataNotFoundError(
                    f"{path}:{i}: expected 5 MRPC columns with quality 0/1, got {r!r}"
                )
            out.append(Example(r[3].strip(), r[4].strip(), int(r[0])))
    elif task.name == "qnli":
        labels = {"entailment": 0, "not_entailment": 1}
        for i, r in enumerate(_read_tsv(path, True), start=2):
            if len(r) != 4 or r[3] not in labels:
                raise DataNotFoundError(
                    f"{path}:{i}: expected 4 QNLI columns with an entailment label, got {r!r}"
                )
            out.append(Example(r[1].strip(), r[2].strip(), labels[r[3]]))
    else:  # pragma: no cover - guarded by get_task
        raise ConfigError(f"no parser for task {task.name!r}")
    return out


def _subsample(rows: Sequence[Example], n: int | None, seed: int) -> tuple[Example, ...]:
    if n is None or n >= len(rows):
        return tuple(rows)
    if n <= 0:
        raise ConfigError(
            f"max_train_examples ({n}) must be a positive integer or None for all rows"
        )
    idx = sorted(random.Random(seed).sample(range(len(rows)), n))
    return tuple(rows[i] for i in idx)


def load_task(
    task: str,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    source: str = "local",
    max_train_examples: int | None = None,
    max_dev_examples: int | None = None,
    seed: int = 0,
) -> TaskData:
    """Load a task's train and dev splits.

    `source="local"` reads a GLUE-format directory (see `resolve_data_dir`); `source="hf"` uses the
    Hugging Face `datasets` GLUE loader (needs network access and `pip install datasets`).
    Train subsampling is deterministic in `seed`. QNLI ships only a dev split locally: its rows are
    split deterministically, 80% train / 20% dev.
    """
    spec = get_task(task)
    if source not in ("local", "hf"):
        raise ConfigError(f"data source {source!r} is not one of 'local', 'hf'")
    if source == "hf":
        train, dev, where = _load_hf(spec)
    else:
        root = resolve_data_dir(data_dir)
        folder = root / spec.glue_dir
        where = str(folder)
        if not folder.is_dir():
            raise DataNotFoundError(
                f"task folder {str(folder)!r} not found; the GLUE directory {str(root)!r} needs a "
                f"{spec.glue_dir}/ folder (point --data-dir or AUTOPRUMUX_DATA elsewhere)"
            )
        dev_all = _parse_rows(spec, folder / "dev.tsv")
        if (folder / "train.tsv").is_file():
            train, dev = _parse_rows(spec, folder / "train.tsv"), dev_all
        else:
            # e.g. QNLI in the shared dump: deterministic 80/20 split of dev
            order = list(range(len(dev_all)))
            random.Random(1234).shuffle(order)
            cut = int(0.8 * len(order))
            train = [dev_all[i] for i in sorted(order[:cut])]
            dev = [dev_all[i] for i in sorted(order[cut:])]
    return TaskData(
        task=spec,
        train=_subsample(train, max_train_examples, seed),
        dev=_subsample(dev, max_dev_examples, seed + 1),
        source=where,
    )


def _load_hf(spec: TaskSpec) -> tuple[list[Example], list[Example], str]:
    try:
        import datasets
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ConfigError(
            "--data-source hf needs the `datasets` package: pip install 'autoprumux[hf]'"
        ) from e
    ds = datasets.load_dataset("glue", spec.hf_config)
    cols = {
        "sst2": ("sentence", None),
        "cola": ("sentence", None),
        "mrpc": ("sentence1", "sentence2"),
        "qnli": ("question", "sentence"),
    }[spec.name]

    def conv(split: str) -> list[Example]:
        return [
            Example(r[cols[0]], r[cols[1]] if cols[1] else None, int(r["label"])) for r in ds[split]
        ]

    return conv("train"), conv("validation"), f"hf:glue/{spec.hf_config}"
