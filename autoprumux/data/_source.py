"""Any labelled text-classification data as a task: `DataSource` (a CSV, TSV, JSONL or Parquet
file, a directory of split files, or `hf:NAME[/CONFIG]`) and `load_task_data`, the one entry
that gives the `TaskData` of either a built-in GLUE task's name or a `DataSource`.

Rules (each broken one raises a ConfigError or DataNotFoundError naming the value and the fix):
the text and label columns exist (and the pair column when named); every row has a label and a
text that is not empty or only whitespace; labels are integers or strings, at least two
classes; every dev label occurs in train. Labels are normalised once, as read (`label_key`):
"1", 1, 1.0, "01" and "1.0" are the class 1, "1.50" and "1.5" the class "1.5". Labels become
class indices in sorted order (integers numerically), named in `TaskSpec.label_names`. With two classes, f1 scores the minority class of train as positive
(`TaskSpec.positive`; ties: the later in sorted order) unless `pos_label` names another.
Without a dev split of its own, a deterministic, stratified share of train becomes dev
(`DataSource.dev_fraction`, at most `MAX_DEV_SPLIT_ROWS` rows), recorded in `TaskData.dev_split`.
"""

from __future__ import annotations

import math
import os
import re
from collections import Counter
from dataclasses import dataclass, replace
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autoprumux.data._glue import Example, TaskData, TaskSpec, _subsample, get_task, load_task
from autoprumux.data._overlap import WholeTexts
from autoprumux.data._tables import (
    Table,
    check_format,
    parse_hub_name,
    path_problem,
    read_hub,
    read_table,
    split_files,
)
from autoprumux.errors import ConfigError, DataNotFoundError

if TYPE_CHECKING:
    from autoprumux.config import Recipe

METRICS = ("accuracy", "f1", "mcc")  # a task's primary dev metric (f1: macro over > 2 classes)
DEFAULT_PAIR_COLUMN = "text_pair"  # read when present, unless another pair column is named
MAX_DEV_SPLIT_ROWS = 2000  # a carved dev split larger than this only slows every evaluation
# fixed, not the recipe's seed: every recipe and seed of a study scores on the same dev rows
DEV_SPLIT_SEED = 1234
HUB_PREFIX = "hf:"
# a label written as a decimal number: "1", "-2", "1.0", "1.", ".5"
_DECIMAL = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)")


def check_metric(metric: str | None) -> str | None:
    if metric is not None and metric not in METRICS:
        raise ConfigError(
            f"--metric {metric!r} is not one of {list(METRICS)} (f1 suits imbalanced classes: "
            "positive-class F1 for two, macro-F1 for more)"
        )
    return metric


def check_pos_label(pos_label: str | int | None, metric: str | None) -> str | None:
    """The positive class f1 scores (`--pos-label`, a space's `pos_label:`) as a class name, or
    None for the default. Checked cheaply, before any data is read: it needs `metric` f1
    (accuracy and MCC have no positive class; None is the task's own metric, never f1). That it
    names one of two classes is checked when the data is read (`load_task_data`)."""
    if pos_label is None:
        return None
    if isinstance(pos_label, bool) or not isinstance(pos_label, str | int):
        raise ConfigError(
            f"--pos-label ({pos_label!r}) must be a class name as written in the data, e.g. "
            "--pos-label fraud"
        )
    name = str(pos_label).strip()
    if not name:
        raise ConfigError("--pos-label is empty; name a class, e.g. --pos-label fraud")
    if metric != "f1":
        used = f"--metric {metric}" if metric is not None else "the task's own metric"
        raise ConfigError(
            f"--pos-label {name!r} picks the positive class of f1, but {used} has none; add "
            "--metric f1 or drop --pos-label"
        )
    return name


def minority_class(labels: list[int], num_labels: int) -> int:
    """The class f1 scores as positive by default on the user's data: the rarest in `labels`
    (train), ties going to the later class in sorted order (class 1 of balanced data)."""
    counts = Counter(labels)
    return min(range(num_labels), key=lambda i: (counts.get(i, 0), -i))


def _positive_index(data: TaskData, name: str) -> int:
    """The index of the class `name` (--pos-label) of `data`'s two classes: a class name, or for
    a GLUE task also its label as written in the GLUE files ("0", "1")."""
    spec = data.task
    classes = ", ".join(repr(n) for n in spec.label_names)
    if spec.num_labels != 2:
        raise ConfigError(
            f"--pos-label {name!r}: {spec.name} has {spec.num_labels} classes ({classes}), and "
            "f1 over more than two is macro-F1, with no positive class; drop --pos-label"
        )
    if name in spec.label_names:
        return spec.label_names.index(name)
    if spec.is_glue and name in ("0", "1"):
        return int(name)
    raise ConfigError(
        f"--pos-label {name!r} is not a class of {spec.name} (its classes: {classes}); name "
        "one of them"
    )


@dataclass(frozen=True)
class DataSource:
    """A user's labelled text-classification data: `location` is a CSV, TSV, JSONL or Parquet
    file, a directory holding `train.*` (and `dev.*` or `validation.*`), or "hf:NAME[/CONFIG]"
    (Hugging Face `datasets`). Checked once when made (it exists, a known format, distinct
    column names, a sensible dev fraction); its rows are checked when read (`load_task_data`).
    `pair_column=None` reads a "text_pair" column when the data has one."""

    location: str
    text_column: str = "text"
    pair_column: str | None = None
    label_column: str = "label"
    dev_fraction: float = 0.1  # of train, carved as dev when the data has no dev split

    def __post_init__(self) -> None:
        if isinstance(self.location, os.PathLike):
            object.__setattr__(self, "location", os.fspath(self.location))
        if not isinstance(self.location, str) or not self.location.strip():
            raise ConfigError(
                f"--data ({self.location!r}) must name a file, a directory or hf:NAME[/CONFIG]"
            )
        for flag, value in (
            ("--text-column", self.text_column),
            ("--label-column", self.label_column),
            ("--pair-column", self.pair_column),
        ):
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise ConfigError(f"{flag} ({value!r}) must be a non-empty column name")
        named = [c for c in (self.text_column, self.pair_column, self.label_column) if c]
        if len(set(named)) != len(named):
            raise ConfigError(
                f"the text, pair and label columns must differ, got {named}; name each with "
                "--text-column, --pair-column, --label-column"
            )
        f = self.dev_fraction
        if isinstance(f, bool) or not isinstance(f, int | float) or not 0.0 < f <= 0.5:
            raise ConfigError(
                f"--dev-fraction ({f!r}) must be a number in (0, 0.5], e.g. 0.1 (the share of "
                "train held out as dev when the data has no dev split)"
            )
        object.__setattr__(self, "dev_fraction", float(f))
        if self.is_hub:
            parse_hub_name(self.location[len(HUB_PREFIX) :])
            return
        path = self.path
        if path.is_dir():
            split_files(path)
        elif not path.exists():
            raise DataNotFoundError(
                f"--data {self.location!r} {path_problem(path)}; pass a CSV, TSV, JSONL or "
                "Parquet file, a directory with train.* (and dev.*), or hf:NAME[/CONFIG]"
            )
        else:
            check_format(path)

    @property
    def is_hub(self) -> bool:
        return self.location.startswith(HUB_PREFIX)

    @property
    def path(self) -> Path:
        """The file or directory (relative paths from the working directory)."""
        return Path(self.location).expanduser()

    @property
    def task_name(self) -> str:
        """The task's name: the file's stem, the directory's name, or the hub dataset's name and
        config ("glue-sst2"), in characters safe in study and file names."""
        if self.is_hub:
            raw = self.location[len(HUB_PREFIX) :].strip("/").replace("/", "-")
        else:
            path = self.path.resolve()
            raw = path.name if path.is_dir() else path.stem
        return re.sub(r"[^A-Za-z0-9_.-]+", "-", raw).strip("-.")[:40] or "data"

    def to_dict(self) -> dict[str, Any]:
        """The search-space keys of this source (the defaults left out)."""
        out: dict[str, Any] = {"data": self.location}
        for key, default in DATA_KEY_DEFAULTS.items():
            if getattr(self, key) != default:
                out[key] = getattr(self, key)
        return out


# the search-space (and flag) keys of a DataSource beside `data`, with their defaults
DATA_KEY_DEFAULTS: dict[str, Any] = {
    "text_column": "text",
    "pair_column": None,
    "label_column": "label",
    "dev_fraction": 0.1,
}


def resolve_task(
    task: str | None,
    data: DataSource | None,
    metric: str | None = None,
    pos_label: str | int | None = None,
) -> str | DataSource:
    """The task to load: a GLUE task's name (default sst2) or the user's data, checked
    cheaply (no rows are read), so a bad choice fails before a model loads."""
    check_metric(metric)
    check_pos_label(pos_label, metric)
    if data is None:
        return get_task(task or "sst2").name
    if not isinstance(data, DataSource):
        raise ConfigError(f"data ({data!r}) must be a DataSource, e.g. DataSource('train.csv')")
    if task is not None:
        raise ConfigError(
            f"task {task!r} and data {data.location!r} both given; the data is the task (named "
            f"{data.task_name!r}): give one of them"
        )
    return data


def load_task_data(
    task: str | DataSource,
    *,
    recipe: Recipe | None = None,
    metric: str | None = None,
    pos_label: str | int | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    source: str = "local",
) -> TaskData:
    """The train and dev splits of a GLUE task (by name; see `load_task` for `data_dir` and
    `source`) or of the user's data, as `recipe` trains on them: train subsampled to
    `max_train_examples` (seeded by its seed). The user's data must hold at least a batch of
    training rows. `metric` overrides the task's primary metric (GLUE: CoLA mcc, else
    accuracy; the user's data: accuracy). `pos_label` names the class f1 scores as positive
    (two classes, metric f1); by default GLUE's label 1, and on the user's data the minority
    class of train."""
    check_metric(metric)
    name = check_pos_label(pos_label, metric)
    max_train = recipe.max_train_examples if recipe is not None else None
    seed = recipe.seed if recipe is not None else 0
    if isinstance(task, DataSource):
        data = _load_own(task, max_train, seed)
        batch = recipe.batch_size if recipe is not None else 1
        if len(data.train) < batch:
            raise ConfigError(
                f"--data {task.location!r} has {len(data.train)} training rows (after the dev "
                f"split and --max-train-examples), fewer than the batch size ({batch}); add "
                "rows or lower --batch-size"
            )
    else:
        data = load_task(
            task, data_dir=data_dir, source=source, max_train_examples=max_train, seed=seed
        )
    if metric is not None and metric != data.task.metric:
        data = replace(data, task=replace(data.task, metric=metric))
    if name is not None:
        data = replace(data, task=replace(data.task, positive=_positive_index(data, name)))
    return data


def _load_own(src: DataSource, max_train: int | None, seed: int) -> TaskData:
    if src.is_hub:
        train_table, dev_table = read_hub(src.location[len(HUB_PREFIX) :], src.label_column)
        where = src.location
    elif src.path.is_dir():
        train_file, dev_file = split_files(src.path)
        train_table = read_table(train_file)
        dev_table = read_table(dev_file) if dev_file is not None else None
        where = str(src.path)
    else:
        train_table, dev_table, where = read_table(src.path), None, str(src.path)
    tables = [train_table] if dev_table is None else [train_table, dev_table]
    pair = src.pair_column
    if pair is None and DEFAULT_PAIR_COLUMN in train_table.columns:
        pair = DEFAULT_PAIR_COLUMN
    for table in tables:
        _check_columns(table, src, pair)
    raw = [_labels(t, src.label_column) for t in tables]
    as_int = all(isinstance(v, int) for labels in raw for v in labels)
    keys = [[v if as_int else str(v) for v in labels] for labels in raw]
    classes: list[Any] = sorted(set(keys[0]))  # integers numerically, strings as text
    if len(classes) < 2:
        raise ConfigError(
            f"{train_table.where}: every training row has label {classes[0]!r} in column "
            f"{src.label_column!r}; classification needs at least two classes"
        )
    if len(keys) > 1 and (unseen := sorted(set(keys[1]) - set(classes))):
        raise ConfigError(
            f"{tables[1].where}: dev labels {unseen[:5]} never occur in train (train has "
            f"{classes[:10]}); fix the labels or add training rows of those classes"
        )
    index = {c: i for i, c in enumerate(classes)}
    names = train_table.class_names
    spec = TaskSpec(
        name=src.task_name,
        glue_dir="",
        num_labels=len(classes),
        pair=pair is not None,
        metric="accuracy",
        hf_config="",
        # a hub ClassLabel's names where it has them, else the labels as written
        label_names=tuple(
            names[c] if isinstance(c, int) and 0 <= c < len(names) else str(c) for c in classes
        ),
    )
    splits = [
        _examples(t, src, pair, [index[k] for k in ks]) for t, ks in zip(tables, keys, strict=True)
    ]
    train, dev_split = splits[0], ""
    if len(splits) > 1:
        dev = splits[1]
    else:
        train, dev, dev_split = carve_dev_split(
            train, src.dev_fraction, where=train_table.where, label_names=spec.label_names
        )
    # f1's positive class: the minority of train, all of it (a subsample must not flip it)
    spec = replace(spec, positive=minority_class([ex.label for ex in train], len(classes)))
    return TaskData(
        task=spec,
        train=_subsample(train, max_train, seed),
        dev=tuple(dev),
        source=where,
        dev_split=dev_split,
    )


def _check_columns(table: Table, src: DataSource, pair: str | None) -> None:
    if table.num_rows == 0:
        raise ConfigError(f"{table.where} holds no rows; it needs a header and labelled rows")
    for flag, column in (
        ("--text-column", src.text_column),
        ("--label-column", src.label_column),
        ("--pair-column", pair),
    ):
        if column is not None and column not in table.columns:
            raise ConfigError(
                f"{table.where} has no column {column!r} (its columns: "
                f"{', '.join(map(str, table.columns))}); name the right one with {flag}"
            )


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or (isinstance(v, str) and not v)


def label_key(label: str) -> int | str:
    """A label read as text, normalised: a decimal number with an integer value is that integer
    ("1", "+1", "01", "1.0" and "1." are 1), another decimal number its shortest decimal
    ("1.50" is "1.5"), anything else the text as written."""
    if not _DECIMAL.fullmatch(label):
        return label
    d = Decimal(label)
    return int(d) if d == d.to_integral_value() else format(d.normalize(), "f")


def _labels(table: Table, column: str) -> list[int | str]:
    """The column's labels: integers (also "3", "3.0" and 3.0), or stripped strings with decimal
    numbers normalised (`label_key`), none blank."""
    out: list[int | str] = []
    for row, v in enumerate(table.columns[column], start=1):
        v = v.strip() if isinstance(v, str) else v
        if _missing(v) or (v == -1 and table.class_names):  # -1: the hub's "no label"
            raise ConfigError(
                f"{table.where}, row {row}: no label in column {column!r}; give every row a "
                "label or drop the unlabelled ones"
            )
        if isinstance(v, bool):
            out.append(str(v).lower())
        elif isinstance(v, int):
            out.append(v)
        elif isinstance(v, float) and v.is_integer():
            out.append(int(v))
        elif isinstance(v, str):
            out.append(label_key(v))
        else:
            raise ConfigError(
                f"{table.where}, row {row}: label {v!r} in column {column!r} is not a class "
                "(an integer or a string); regression targets are not supported"
            )
    return out


def _texts(table: Table, column: str) -> list[str]:
    out = []
    for row, v in enumerate(table.columns[column], start=1):
        if v is None or isinstance(v, float) and math.isnan(v):
            raise ConfigError(
                f"{table.where}, row {row}: no text in column {column!r}; fill it in or drop "
                "the row"
            )
        if not isinstance(v, str):
            raise ConfigError(
                f"{table.where}, row {row}: column {column!r} holds {v!r} "
                f"({type(v).__name__}), not text; name the text column with --text-column"
            )
        v = v.strip()
        if not v:
            raise ConfigError(
                f"{table.where}, row {row}: the text in column {column!r} is empty or only "
                "whitespace; write the text or drop the row (nothing is dropped silently)"
            )
        out.append(v)
    return out


def _examples(table: Table, src: DataSource, pair: str | None, labels: list[int]) -> list[Example]:
    a = _texts(table, src.text_column)
    b: list[str | None] = list(_texts(table, pair)) if pair else [None] * len(a)
    return [Example(x, y, lab) for x, y, lab in zip(a, b, labels, strict=True)]


def carve_dev_split(
    rows: list[Example],
    fraction: float,
    *,
    where: str = "the training data",
    label_names: tuple[str, ...] = (),
) -> tuple[list[Example], list[Example], str]:
    """(train, dev, description): `fraction` of the rows' whole texts (at least one per class, at
    most `MAX_DEV_SPLIT_ROWS`) held out as dev, stratified by label, the same for the same rows,
    their parts dropped from train (`WholeTexts`); both keep the file's order."""
    texts = WholeTexts(rows)
    labels = texts.whole_labels
    counts = Counter(labels)
    size = min(MAX_DEV_SPLIT_ROWS, max(len(counts), round(fraction * len(labels))))
    if min(counts.values()) < 2 or len(labels) - size < len(counts):
        rare = min(counts, key=lambda k: counts[k])
        name = label_names[rare] if rare < len(label_names) else rare
        raise ConfigError(
            f"{where}: too few rows for a stratified dev split ({len(rows)} rows, class "
            f"{name!r} has {counts[rare]}; each class needs 2); add rows, or give a dev file "
            "(dev.* beside train.* in a directory)"
        )
    split = texts.hold_out(size, DEV_SPLIT_SEED)
    described = (
        f"stratified {size} of {len(labels)} whole train texts (fraction {fraction:g}, "
        f"seed {DEV_SPLIT_SEED})"
    )
    if split.dropped:
        described += f", {len(split.dropped)} rows that are parts of them dropped from train"
    return [rows[i] for i in split.trained], [rows[i] for i in split.held], described
