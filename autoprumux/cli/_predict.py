"""`autoprumux predict DIR --input FILE --output FILE`: batch scoring of a CSV, TSV or JSONL
file with an exported model; the output is the input rows plus the predicted label and the
class probabilities, written whole or not at all."""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

from autoprumux._paths import resolved
from autoprumux.cli._checks import _check_output_file
from autoprumux.cli._evaluate import _atomic_write
from autoprumux.errors import ConfigError

FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl"}


def add_predict_parser(sub: Any) -> None:
    pr = sub.add_parser(
        "predict", help="label the texts of a CSV, TSV or JSONL file with an exported model"
    )
    pr.add_argument("model_dir", metavar="DIR", help="a directory written by autoprumux export")
    pr.add_argument(
        "--input",
        required=True,
        help="CSV, TSV (GLUE-style, unquoted) or JSONL file, by its extension, with a header",
    )
    pr.add_argument(
        "--output",
        required=True,
        help="the input rows plus label, probability and probability_<label> columns; CSV, "
        "TSV or JSONL by its extension",
    )
    pr.add_argument("--text-column", default="text", help="default: text")
    pr.add_argument(
        "--text-pair-column", default="text_pair", help="pair tasks (default: text_pair)"
    )
    pr.add_argument(
        "--output-prefix",
        default="",
        help="prefix of the added columns, e.g. pred_ when the input has a label column",
    )
    pr.add_argument("--device", default="cpu", help="cpu | cuda (default: cpu)")
    pr.add_argument("--batch-size", type=int, default=64, help="texts per forward (default: 64)")
    pr.add_argument(
        "--threads",
        type=int,
        default=None,
        help="an ONNX export's ONNX Runtime threads (default: the cores this process may use)",
    )


def _format(flag: str, path: str) -> str:
    fmt = FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise ConfigError(f"{flag} {path!r}: unknown file type; name a {', '.join(FORMATS)} file")
    return fmt


def read_table(path: str) -> tuple[list[str], list[dict[str, Any]]]:
    """(columns, rows) of a CSV, TSV or JSONL file (ConfigError naming the line on bad rows)."""
    fmt = _format("--input", path)
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"--input {path!r} does not exist")
    try:
        text = p.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise ConfigError(f"--input {path!r} is not UTF-8 text (byte {e.start})") from None
    if fmt == "jsonl":
        return _read_jsonl(path, text)
    rows_ = list(
        csv.reader(io.StringIO(text, newline=""), delimiter="\t", quoting=csv.QUOTE_NONE)
        if fmt == "tsv"
        else csv.reader(io.StringIO(text, newline=""))
    )
    if not rows_:
        raise ConfigError(f"--input {path!r} is empty; it needs a header row")
    header, body = rows_[0], rows_[1:]
    out = []
    for i, r in enumerate(body, start=2):
        if len(r) != len(header):
            raise ConfigError(
                f"--input {path!r} line {i}: {len(r)} fields, the header has {len(header)}"
            )
        out.append(dict(zip(header, r, strict=True)))
    return header, out


def _read_jsonl(path: str, text: str) -> tuple[list[str], list[dict[str, Any]]]:
    columns: dict[str, None] = {}
    rows = []
    for i, line in enumerate(text.split("\n"), start=1):  # not splitlines: U+2028 is valid in JSON
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            raise ConfigError(f"--input {path!r} line {i} is not JSON") from None
        if not isinstance(row, dict):
            raise ConfigError(f"--input {path!r} line {i} is not a JSON object")
        columns.update(dict.fromkeys(row))
        rows.append(row)
    return list(columns), rows


def write_table(path: str, columns: list[str], rows: list[dict[str, Any]]) -> None:
    fmt = _format("--output", path)
    buf = io.StringIO(newline="")
    if fmt == "jsonl":
        for r in rows:
            buf.write(json.dumps(r, ensure_ascii=False) + "\n")
    else:
        w = (
            # unquoted like GLUE's files: quotes are text (quotechar None), tabs cannot be
            csv.writer(
                buf, delimiter="\t", quoting=csv.QUOTE_NONE, quotechar=None, lineterminator="\n"
            )
            if fmt == "tsv"
            else csv.writer(buf, lineterminator="\n")
        )
        w.writerow(columns)
        try:
            w.writerows([[r.get(c, "") for c in columns] for r in rows])
        except csv.Error:
            raise ConfigError(
                f"--output {path!r}: a value holds a tab or a line break, which an unquoted "
                "TSV cannot; write a .csv or .jsonl file"
            ) from None
    _atomic_write(Path(path), buf.getvalue())


def _check_not_the_input(input_: str, output: str) -> None:
    """--output must not name the input file, by its path, a symbolic link or a hard link:
    the input is read whole, then the output renamed over it."""
    i, o = Path(input_).expanduser(), Path(output).expanduser()
    same = resolved(i) == resolved(o)
    if not same and i.exists() and o.exists():
        with contextlib.suppress(OSError):
            same = os.path.samefile(i, o)
    if same:
        raise ConfigError(
            f"--output {output!r} is the --input file {input_!r}; name a new file (predict "
            "never writes over its input)"
        )


def _texts(
    rows: list[dict[str, Any]], cols: list[str], flags: list[str]
) -> list[str | tuple[str, str]]:
    for c, flag in zip(cols, flags, strict=True):
        for i, r in enumerate(rows, start=1):
            v = r.get(c)
            if not isinstance(v, str):
                what = "missing" if v is None else f"not a string ({type(v).__name__})"
                raise ConfigError(f"row {i}: {flag} {c!r} is {what}")
    if len(cols) == 1:
        return [r[cols[0]] for r in rows]
    first, second = cols  # a pair task: the text and the text pair
    return [(r[first], r[second]) for r in rows]


def cmd_predict(args: argparse.Namespace) -> int:
    from autoprumux._progress import progress
    from autoprumux.deploy import Predictions, load, read_manifest

    # everything cheap first: the model is loaded only for a readable input and a writable output
    manifest = read_manifest(args.model_dir)
    _format("--output", args.output)
    _check_output_file("--output", args.output)
    _check_not_the_input(args.input, args.output)
    columns, rows = read_table(args.input)
    cols, flags = [args.text_column], ["--text-column"]
    if manifest.pair:
        cols.append(args.text_pair_column)
        flags.append("--text-pair-column")
    for c, flag in zip(cols, flags, strict=True):
        if c not in columns:
            raise ConfigError(
                f"--input {args.input!r} has no column {c!r} (columns: {columns[:10]}); name "
                f"the {'pair' if flag.endswith('pair-column') else 'text'} column with {flag}"
            )
    texts = _texts(rows, cols, flags)
    # the added columns' names depend on the labels only: a clash is refused before any work
    added_names = list(Predictions(manifest.label_names, [], []).columns(args.output_prefix))
    clash = [c for c in added_names if c in columns]
    if clash:
        raise ConfigError(
            f"--input {args.input!r} already has the column {clash[0]!r}; name the new columns "
            "apart with --output-prefix, e.g. --output-prefix pred_"
        )
    predictor = load(
        args.model_dir, device=args.device, batch_size=args.batch_size, threads=args.threads
    )
    bar = progress(len(texts), f"predict {Path(args.input).name}")
    try:
        preds = predictor.predict(texts, progress=bar.update)
    finally:
        bar.close()
    added = preds.columns(args.output_prefix)
    out_rows = [{**r, **{c: v[i] for c, v in added.items()}} for i, r in enumerate(rows)]
    write_table(args.output, [*columns, *added], out_rows)
    counts = Counter(preds.labels)
    print(
        f"labelled {len(rows)} rows with {args.model_dir} -> {args.output} ("
        + ", ".join(f"{name}: {counts.get(name, 0)}" for name in manifest.label_names)
        + ")"
    )
    return 0
