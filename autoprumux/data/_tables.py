"""Reading a user's labelled text into column tables: CSV, TSV, JSONL and Parquet files, a
directory of split files, or a Hugging Face dataset (`hf:NAME[/CONFIG]`).

A `Table` is one split as columns (name -> values in row order). Reading checks only what a
format can get wrong (encoding, ragged rows, invalid JSON, a value longer than
`_texts.MAX_VALUE_CHARS`); which columns a task needs is checked by the caller (`_source`),
which names the flags that fix it. CSV, TSV and JSONL files are read a line at a time: beyond
the rows kept, reading holds about twice the longest line.
"""

from __future__ import annotations

import codecs
import csv
import errno
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autoprumux.data._texts import MAX_VALUE_CHARS, TOO_LONG, check_value_length
from autoprumux.errors import ConfigError, DataNotFoundError

# file suffix -> format; .ndjson as `autoprumux predict` reads it
FORMATS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
}
# the file stems of a directory layout's dev split, in the order they are looked for
DEV_STEMS = ("dev", "validation")
# the split names of a hub dataset that may serve as its dev split (only if fully labelled: a
# test split often carries -1 or no labels)
HUB_DEV_SPLITS = ("validation", "dev", "test")


@dataclass(frozen=True)
class Table:
    """One split of a user's data as columns. `where` names it in messages ("data file
    '...'", or "hf:NAME/CONFIG[split]"); `class_names`: the hub's names of integer labels (a ClassLabel
    column), else empty."""

    where: str
    columns: dict[str, list[Any]]
    class_names: tuple[str, ...] = field(default=())

    @property
    def num_rows(self) -> int:
        return len(next(iter(self.columns.values()), []))


def path_problem(path: Path) -> str:
    """What keeps `path` from being read, as the end of a sentence naming it: "does not exist",
    or a symbolic link loop, a link to a missing target, a folder that cannot be entered."""
    try:
        os.stat(path)
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "is a symbolic link loop (following its links leads back to a link on the way)"
        if path.is_symlink():
            return f"is a symbolic link to {os.readlink(path)!r}, which does not exist"
        if e.errno == errno.EACCES:
            return "cannot be reached (permission denied on a folder on its way)"
        if e.errno == errno.ENOTDIR:
            return "does not exist (a part of its path is a file, not a folder)"
    return "does not exist"


def check_format(path: Path) -> str:
    """The format of a data file from its suffix (a clear error for any other)."""
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ConfigError(
            f"data file {str(path)!r} has an unknown extension {path.suffix or '(none)'!r}; "
            f"name a {', '.join(FORMATS)} file"
        )
    return fmt


def split_files(folder: Path) -> tuple[Path, Path | None]:
    """(train file, dev file or None) of a directory holding `train.*` and optionally `dev.*`
    or `validation.*`, each in one of `FORMATS`."""

    def one(stems: Sequence[str]) -> Path | None:
        found = sorted(
            p for p in folder.iterdir() if p.is_file() and p.stem in stems and p.suffix in FORMATS
        )
        if len(found) > 1:
            raise ConfigError(
                f"data directory {str(folder)!r} holds {', '.join(p.name for p in found)}; keep "
                "one of them"
            )
        return found[0] if found else None

    train = one(("train",))
    if train is None:
        raise DataNotFoundError(
            f"data directory {str(folder)!r} holds no train file; add train.csv (or .tsv, "
            ".jsonl, .parquet), and dev.* or validation.* for a dev split of your own"
        )
    return train, one(DEV_STEMS)


def read_table(path: Path) -> Table:
    """One data file as a table (its format from its suffix, see `check_format`)."""
    fmt = check_format(path)
    if not path.is_file():
        raise DataNotFoundError(
            f"data file {str(path)!r} {path_problem(path)}; pass an existing CSV, TSV, JSONL or "
            "Parquet file, or a directory with train.* (and dev.*)"
        )
    if fmt == "parquet":
        return _read_parquet(path)
    try:
        table = (
            _read_jsonl(path)
            if fmt == "jsonl"
            else _read_delimited(path, "\t" if fmt == "tsv" else ",")
        )
    except UnicodeDecodeError:
        raise ConfigError(
            f"data file {str(path)!r} is not UTF-8 text (byte {_bad_utf8_offset(path)}); "
            "re-save it as UTF-8"
        ) from None
    if table is None:
        raise ConfigError(f"data file {str(path)!r} is empty; it needs a header and rows")
    return table


def _bad_utf8_offset(path: Path) -> int:
    """The offset in the file of its first byte that is not UTF-8."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    with path.open("rb") as f:
        while chunk := f.read(1 << 16):
            pending = len(decoder.getstate()[0])
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as e:
                return offset - pending + e.start
            offset += len(chunk)
    return offset


def _read_delimited(path: Path, delimiter: str) -> Table | None:
    """The rows of a CSV or TSV file, quoted as Python's and pandas' writers quote them (a TSV
    exported by pandas too); None when the file holds nothing but blanks."""
    where = f"data file {str(path)!r}"
    header: list[str] | None = None
    columns: dict[str, list[Any]] = {}
    row = 0  # data rows read; a blank line is no row
    saved = csv.field_size_limit(MAX_VALUE_CHARS)  # csv's own guard, process-wide: restored
    try:
        # newline="": quoted line breaks stay in their field, and any line ending ends a row
        with path.open(encoding="utf-8-sig", newline="") as f:
            for r in csv.reader(f, delimiter=delimiter):
                if header is None:
                    if not "".join(r).strip():  # blank lines before the header
                        continue
                    header = r
                    columns = {name: [] for name in header}
                    continue
                if not r:
                    continue
                row += 1
                if len(r) != len(header):
                    raise ConfigError(
                        f"{where}, row {row}: {len(r)} fields where the header has "
                        f"{len(header)} ({', '.join(header)}); quote fields holding "
                        f"{'tabs' if delimiter == chr(9) else 'commas'}"
                    )
                for name, value in zip(header, r, strict=True):
                    columns[name].append(value)
    except csv.Error as e:
        at = f"{where}, row {row + 1}" if header is not None else f"{where}, its header"
        if "field larger than field limit" in str(e):
            raise ConfigError(
                f"{at}: a field of more than the limit of {MAX_VALUE_CHARS:,} characters; {TOO_LONG}"
            ) from None
        raise ConfigError(f"{at} is not valid CSV ({e}); re-save the file as CSV") from None
    finally:
        csv.field_size_limit(saved)
    if header is None:
        return None
    return Table(where, columns)


def _read_jsonl(path: Path) -> Table | None:
    """The records of a JSONL file, a line at a time (lines end at "\\n" only: U+2028 is valid
    inside a JSON string); None when the file holds nothing but blanks."""
    where = f"data file {str(path)!r}"
    records: list[dict[str, Any]] = []
    with path.open("rb") as f:
        line_no = 0
        # not enumerate(f): its reused result tuple would keep the last line's bytes alive
        for raw in f:
            line_no += 1
            # each copy of a long line is released as soon as the next is made
            line = raw.decode("utf-8-sig" if line_no == 1 else "utf-8")
            del raw
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise ConfigError(
                    f"{where}, line {line_no}: not JSON ({e.msg}); write one JSON object per line"
                ) from None
            except RecursionError:
                raise ConfigError(
                    f"{where}, line {line_no}: JSON nested too deeply; write one flat JSON "
                    "object per line"
                ) from None
            except ValueError as e:  # e.g. an integer of more than 4,300 digits
                raise ConfigError(
                    f"{where}, line {line_no}: not usable JSON ({str(e)[:80]}); write one JSON "
                    "object per line"
                ) from None
            del line
            if not isinstance(rec, dict):
                raise ConfigError(
                    f"{where}, line {line_no}: a JSON {type(rec).__name__}, not an object; write "
                    'one object per line, e.g. {"text": "...", "label": 1}'
                )
            for value in rec.values():
                check_value_length(f"{where}, line {line_no}", value)
            records.append(rec)
    if not records:
        return None
    names: dict[str, None] = {}  # every key seen, in order of appearance
    for rec in records:
        names.update(dict.fromkeys(rec))
    # a key missing from a line is a missing value there (the caller names the row)
    return Table(where, {n: [rec.get(n) for rec in records] for n in names})


def _check_lengths(table: Table) -> Table:
    """`table`, refused when a value is longer than `MAX_VALUE_CHARS` (formats read whole)."""
    for name, values in table.columns.items():
        for row, value in enumerate(values, start=1):
            check_value_length(f"{table.where}, row {row}, column {name!r}", value)
    return table


def _read_parquet(path: Path) -> Table:
    try:
        import pyarrow.parquet as pq
    except ImportError:  # pragma: no cover - mlflow brings pyarrow
        raise ConfigError(
            f"data file {str(path)!r}: reading Parquet needs pyarrow; pip install pyarrow"
        ) from None
    try:
        columns = pq.read_table(path).to_pydict()
    except Exception as e:  # noqa: BLE001 - pyarrow's errors have no common base we can name
        raise ConfigError(
            f"data file {str(path)!r} is not a readable Parquet file ({type(e).__name__}: {e}); "
            "write it with pandas' to_parquet or pyarrow"
        ) from None
    if not columns:
        raise ConfigError(f"data file {str(path)!r} is empty; it needs columns and rows")
    return _check_lengths(Table(f"data file {str(path)!r}", columns))


def parse_hub_name(spec: str) -> tuple[str, str | None]:
    """(dataset, config) of "NAME", "NAME/CONFIG" or "OWNER/NAME/CONFIG" (the part after
    "hf:"). A dataset with an owner needs its config named too: the hub's single-config
    datasets call theirs "default"."""
    parts = spec.strip().split("/")
    if not 1 <= len(parts) <= 3 or not all(p.strip() for p in parts):
        raise ConfigError(
            f"--data 'hf:{spec}' is not hf:NAME, hf:NAME/CONFIG or hf:OWNER/NAME/CONFIG "
            "(e.g. hf:glue/sst2, hf:imdb, hf:SetFit/sst5/default)"
        )
    if len(parts) == 1:
        return parts[0], None
    if len(parts) == 2:
        return parts[0], parts[1]
    return f"{parts[0]}/{parts[1]}", parts[2]


def read_hub(spec: str, label_column: str) -> tuple[Table, Table | None]:
    """(train, dev or None) of a Hugging Face dataset: its `train` split, and as dev the first
    of `HUB_DEV_SPLITS` whose labels are all set (None: the caller carves one from train)."""
    try:
        import datasets
    except ImportError:
        raise ConfigError(
            f"--data hf:{spec} needs the `datasets` package: pip install 'autoprumux[hf]' "
            "(or pass a local CSV, TSV, JSONL or Parquet file)"
        ) from None
    name, config = parse_hub_name(spec)
    where = f"hf:{name}" + (f"/{config}" if config else "")
    try:
        loaded = datasets.load_dataset(name, config)
    except Exception as e:  # noqa: BLE001 - the hub raises many kinds (network, auth, names)
        raise DataNotFoundError(
            f"--data {where}: the dataset could not be loaded ({type(e).__name__}: {e}); check "
            "the name and config on huggingface.co/datasets and that this machine is online"
        ) from None
    splits = list(loaded.keys())
    if "train" not in splits:
        raise ConfigError(
            f"--data {where} has no 'train' split (splits: {', '.join(splits)}); use a dataset "
            "with a train split or export one to a local file"
        )
    train = _hub_table(loaded["train"], f"{where}[train]", label_column)
    for split in HUB_DEV_SPLITS:
        if split in splits:
            table = _hub_table(loaded[split], f"{where}[{split}]", label_column)
            if _fully_labelled(table, label_column):
                return train, table
    return train, None


def _hub_table(split: Any, where: str, label_column: str) -> Table:
    columns = {name: list(split[name]) for name in split.column_names}
    feature = getattr(split, "features", {}).get(label_column)
    names = getattr(feature, "names", None)  # a ClassLabel: integer labels with names
    return _check_lengths(Table(where, columns, tuple(str(n) for n in names) if names else ()))


def _fully_labelled(table: Table, label_column: str) -> bool:
    labels = table.columns.get(label_column)
    # ClassLabel marks a missing label -1 (GLUE's test splits)
    return bool(labels) and all(v is not None and v != -1 for v in labels or ())
