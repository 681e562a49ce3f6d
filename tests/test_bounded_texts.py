"""Bounded work per text wherever a text enters (issue 37), and the data hygiene rules.

- Tokenising: every text is cut to `max_text_chars(max_seq_len)` characters first (one rule, in
  `data.encode`), so `predict`, `load().predict`, the MLflow pyfunc and the students' server
  tokenise a bounded prefix, with the same tokens as the whole text for ordinary texts.
- Data files are read a line at a time and refuse a value over `MAX_VALUE_CHARS`: one 200 MB
  line is refused, naming its row, with peak memory under 2.5x the line (child processes'
  VmHWM). `autoprumux predict` on a 20 MB text stays within 200 MB of its run on a short text.
- Labels "1", 1 and "1.0" are one class; empty texts are refused with their row; a symlink loop
  as `--data` is named as such; `serve-students --data` answers the data's class names.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from autoprumux.cli import main
from autoprumux.data import (
    CHARS_PER_TOKEN,
    MAX_VALUE_CHARS,
    DataSource,
    Example,
    encode,
    load_task_data,
    max_text_chars,
)
from autoprumux.errors import ConfigError, DataNotFoundError
from autoprumux.models import resolve_model

MB = 1 << 20
SEQ = 32
# far longer than the cut at SEQ, short enough that tokenising it whole (as before the cut) costs
# a few hundred MB, not gigabytes, should the cut regress
LONG = "word " * 250_000


@pytest.fixture(scope="module")
def tokenizer():
    return resolve_model(None).tokenizer()


class Spy:
    """A tokenizer that records the longest text and the characters of each call it gets, and
    refuses (before any work) a text longer than the cut at SEQ: uncut, a long pair costs the
    tokenizer gigabytes."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.longest = 0
        self.calls: list[int] = []

    def __call__(self, a, b=None, **kw):
        texts = [*a, *(b or [])]
        self.longest = max([self.longest, *map(len, texts)])
        self.calls.append(sum(map(len, texts)))
        if self.longest > max_text_chars(SEQ):
            raise AssertionError(f"the tokenizer got a text of {self.longest:,} characters")
        return self.tokenizer(a, b, **kw)

    def __getattr__(self, name):
        return getattr(self.tokenizer, name)


# ---- the cut before tokenising --------------------------------------------------------------

ORDINARY = [
    "a gripping, funny film",
    "the plot never comes together and the actors look bored " * 40,  # far past max_seq_len
    "see https://example.com/a/b?c=d&e=f#g, 中文 text, café and ＡＢ",
    "x" * 150 + " then a word longer than WordPiece's 100 characters " * 20,
    "   spaced\t\tout\n\nwords   " * 200,
]


@pytest.mark.parametrize("max_seq_len", [8, SEQ, 128])
def test_the_cut_keeps_the_tokens_of_ordinary_texts(tokenizer, max_seq_len):
    examples = [Example(t, None, 0) for t in ORDINARY]
    got = encode(examples, tokenizer, max_seq_len)
    whole = tokenizer(ORDINARY, truncation=True, max_length=max_seq_len)["input_ids"]
    assert [list(x.input_ids) for x in got] == whole
    # a pair: each text beside a short one, both ways round (see `clip_text` on two long ones)
    firsts = [*ORDINARY, *(["a short second sentence"] * len(ORDINARY))]
    seconds = firsts[len(ORDINARY) :] + firsts[: len(ORDINARY)]
    got = encode(
        [Example(t, u, 0) for t, u in zip(firsts, seconds, strict=True)], tokenizer, max_seq_len
    )
    whole = tokenizer(firsts, seconds, truncation=True, max_length=max_seq_len)
    assert [list(x.input_ids) for x in got] == whole["input_ids"]
    assert [list(x.token_type_ids) for x in got] == whole["token_type_ids"]


@pytest.mark.parametrize("max_seq_len", [8, 9, 16])  # budgets odd and even
def test_pairs_are_truncated_as_the_tokenizer_truncates_them(tokenizer, max_seq_len):
    words = [
        "the",
        "quick",
        "brown",
        "fox",
        "playing",
        "extraordinarily",
        "##",
        "unbelievable",
        "中文",
        "ok",
    ]
    firsts = [" ".join(words[:i] * (1 + i % 3)) for i in range(10)]
    seconds = [" ".join(words[::-1][:j] * (1 + j % 2)) for j in range(10)]
    a = [x for x in firsts for _ in seconds]
    b = [y for _ in firsts for y in seconds]
    got = encode([Example(x, y, 0) for x, y in zip(a, b, strict=True)], tokenizer, max_seq_len)
    want = tokenizer(a, b, truncation=True, max_length=max_seq_len)
    assert [list(x.input_ids) for x in got] == want["input_ids"]
    assert [list(x.token_type_ids) for x in got] == want["token_type_ids"]


def test_a_long_text_is_cut_before_the_tokenizer_sees_it(tokenizer):
    spy = Spy(tokenizer)
    long = LONG
    got = encode([Example(long, long, 1), Example("short", "too", 0)], spy, SEQ)
    assert spy.longest == max_text_chars(SEQ) == CHARS_PER_TOKEN * SEQ
    assert len(got[0].input_ids) == SEQ and got[0].label == 1
    # the whole text's first tokens (tokenising a text this long whole costs gigabytes)
    prefix = "word " * 100
    want = tokenizer(prefix, prefix, truncation=True, max_length=SEQ)["input_ids"]
    assert list(got[0].input_ids) == want


def test_many_long_texts_are_tokenised_a_bounded_number_of_characters_at_a_time(tokenizer):
    from autoprumux.data._encoding import ENCODE_CHUNK_CHARS

    spy = Spy(tokenizer)
    texts = [f"text {i} " + "word " * 1000 for i in range(300)]  # 1.2M characters once cut
    got = encode([Example(t, None, i) for i, t in enumerate(texts)], spy, SEQ)
    assert [x.label for x in got] == list(range(300))  # the order kept across calls
    assert len(spy.calls) > 1 and max(spy.calls) <= ENCODE_CHUNK_CHARS + max_text_chars(SEQ)
    want = tokenizer(texts[-1], truncation=True, max_length=SEQ)["input_ids"]
    assert list(got[-1].input_ids) == want


# ---- every path where a text enters ---------------------------------------------------------


@pytest.fixture(scope="module")
def export_dir(tiny_checkpoint, tmp_path_factory) -> Path:
    """A tiny export of the user's own data (classes "neg" and "pos"), max_seq_len 32."""
    from autoprumux import Candidate, PruMuxPipeline, Recipe, ThroughputConfig
    from autoprumux.export import export_model

    root = tmp_path_factory.mktemp("bounded")
    data = root / "reviews.csv"
    data.write_text(
        "text,label\n"
        + "".join(
            f"review number {i} is {'bad' if i % 2 else 'good'},{'neg' if i % 2 else 'pos'}\n"
            for i in range(40)
        ),
        encoding="utf-8",
    )
    recipe = Recipe(
        max_train_examples=16, batch_size=8, max_seq_len=SEQ, finetune_steps=1,
        mux_finetune_steps=1, recovery_steps=1, prune_stages=1,
    )  # fmt: skip
    pipe = PruMuxPipeline(
        data=DataSource(str(data)), model=tiny_checkpoint, recipe=recipe,
        cache_dir=str(root / "cache"),
    )  # fmt: skip
    out = root / "export"
    tp = ThroughputConfig(batch_size=4, seq_len=SEQ, repeats=1, warmup=1)
    export_model(pipe, Candidate(), out, throughput=tp, command="pytest")
    return out


def test_load_predict_and_the_pyfunc_cut_a_long_text(export_dir):
    import pandas as pd

    import autoprumux
    from autoprumux.export._pyfunc import ExportedModel

    pred = autoprumux.load(export_dir)
    spy = Spy(pred.tokenizer)
    pred.tokenizer = spy
    long = LONG
    got = pred.predict([long, "short"])
    assert spy.longest == max_text_chars(SEQ) and set(got.labels) <= {"neg", "pos"}
    assert got.probabilities[0] == pred.predict(["word " * 2000]).probabilities[0]
    spy.longest = 0
    out = ExportedModel(pred).predict(None, pd.DataFrame({"text": [long, "short"]}))
    assert spy.longest == max_text_chars(SEQ) and len(out) == 2


def _ask_students(tokenizer, texts: list[str], **kw) -> dict:
    """The answer of a students' server (a tiny random ensemble of two) to `texts`."""
    import http.client

    from test_serving import JSON, request, tiny_ensemble

    from autoprumux.student_server import FixedPolicy, ServingConfig, StudentServer

    cfg = ServingConfig(port=0, max_seq_len=SEQ, max_chars=2 * MB, max_wait_ms=0.0)
    with StudentServer(tiny_ensemble(2), tokenizer, FixedPolicy(2), config=cfg, **kw) as srv:
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=60)
        status, out, _ = request(
            conn, "POST", "/predict", json.dumps({"texts": texts}).encode(), JSON
        )
        conn.close()
    assert status == 200, out
    return out


def test_the_students_server_cuts_a_long_text(tokenizer):
    spy = Spy(tokenizer)
    out = _ask_students(spy, [LONG, "fine"])
    assert spy.longest == max_text_chars(SEQ) and len(out["labels"]) == 2


def test_the_students_server_answers_the_class_names_it_is_given(tokenizer):
    from test_serving import tiny_ensemble

    from autoprumux.student_server import FixedPolicy, StudentServer

    names = ("neg", "pos")
    out = _ask_students(tokenizer, ["fine", "awful", "ok"], label_names=names)
    assert out["labels"] == [names[i] for i in out["label_ids"]]
    assert _ask_students(tokenizer, ["fine", "awful", "ok"])["labels"] == out["label_ids"]
    with pytest.raises(ConfigError, match="one string per class"):
        StudentServer(tiny_ensemble(2), tokenizer, FixedPolicy(2), label_names=["a"])


def test_serve_students_with_data_answers_the_datas_class_names(tiny_checkpoint, tmp_path):
    """Finding 8: `serve-students --data` answered class indices; it answers the names, as
    `predict` does."""
    import http.client

    from test_serving import JSON, request, served_students

    data = tmp_path / "moods.csv"
    data.write_text(
        "text,label\n" + "".join(f"mood {i} {w},{w}\n" for i in range(30)
                                 for w in ("calm", "angry")),
        encoding="utf-8",
    )  # fmt: skip
    with served_students(tiny_checkpoint, tmp_path, "--data", str(data)) as (port, _):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        status, out, _ = request(conn, "POST", "/predict", b'{"texts": ["calm", "x"]}', JSON)
        conn.close()
        assert status == 200 and len(out["labels"]) == 2, out
        assert set(out["labels"]) <= {"angry", "calm"}, out


# ---- memory, measured in a child process ------------------------------------------------------

# Runs `ACTION` after the imports, reports the growth of peak RSS (VmHWM after, less VmRSS
# before, the peak reset first where the kernel allows) and any error; a watchdog ends the child
# with code 3 as soon as its RSS grows past LIMIT bytes, so a regression fails fast instead of
# exhausting the machine.
CHILD = textwrap.dedent(
    """
    import json, os, sys, threading, time
    import torch, transformers  # noqa: F401 - imported before the baseline
    from autoprumux.cli import main
    from autoprumux.data import DataSource, load_task_data

    def status(key):
        for line in open("/proc/self/status"):
            if line.startswith(key):
                return int(line.split()[1]) * 1024

    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    before = status("VmRSS")
    limit = int(sys.argv[1])

    def watch():
        while True:
            if status("VmRSS") - before > limit:
                print(json.dumps({"over": limit}), flush=True)
                os._exit(3)
            time.sleep(0.01)

    threading.Thread(target=watch, daemon=True).start()
    error = None
    try:
        ACTION
    except Exception as e:
        error = f"{type(e).__name__}: {e}"
    print(json.dumps({"growth": status("VmHWM") - before, "error": error}), flush=True)
    """
)


def run_child(action: str, limit: int, cwd: Path) -> dict:
    code = CHILD.replace("ACTION", action)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "AUTOPRUMUX_PROGRESS": "0"}
    out = subprocess.run(
        [sys.executable, "-c", code, str(limit)],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    assert lines, out.stdout + out.stderr
    report = json.loads(lines[-1])
    assert "over" not in report, f"RSS grew past {limit / MB:.0f} MB: {out.stderr[-2000:]}"
    return report


def test_long_pairs_cost_bounded_memory(tmp_path):
    """The tokenizer's own truncation of a pair combines every overflowing window of one text
    with every one of the other; a pair of texts at the cut for max_seq_len 512 cost it GBs."""
    action = (
        "from autoprumux.data import Example, encode; from autoprumux.models import resolve_model; "
        "tok = resolve_model(None).tokenizer(); long = 'word ' * 250_000; "
        "assert len(encode([Example(long, long, 0)] * 4, tok, 512)[0].input_ids) == 512"
    )
    report = run_child(action, 400 * MB, tmp_path)
    assert report["error"] is None, report


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_one_200_mb_line_is_refused_within_2_5x_its_size(tmp_path, suffix):
    line = 200 * MB
    path = tmp_path / f"huge{suffix}"
    with path.open("w", encoding="utf-8") as f:
        if suffix == ".jsonl":
            f.write('{"label": 1, "text": "' + "word " * (line // 5) + '"}\n')
            f.write('{"label": 0, "text": "short"}\n')
        else:
            f.write("label,text\n1," + "word " * (line // 5) + "\n0,short\n")
    report = run_child(f"load_task_data(DataSource({str(path)!r}))", 5 * line // 2, tmp_path)
    assert report["growth"] < 5 * line // 2, report
    row = "line 1" if suffix == ".jsonl" else "row 1"
    assert report["error"].startswith("ConfigError") and row in report["error"], report
    assert f"{MAX_VALUE_CHARS:,}" in report["error"]


def test_predict_on_a_20_mb_text_stays_within_200_mb_of_a_short_one(export_dir, tmp_path):
    """`autoprumux predict` reads, scores and writes back the input rows: a 20 MB text costs
    the copies of the row the command keeps, not a tokenisation of the whole text."""

    def run(text: str, limit: int) -> int:
        src = tmp_path / "in.jsonl"
        src.write_text(json.dumps({"text": text}) + "\n" + '{"text": "short"}\n', "utf-8")
        argv = ["predict", str(export_dir), "--input", str(src), "--output", "out.jsonl"]
        report = run_child(f"assert main({argv!r}) == 0", limit, tmp_path)
        assert report["error"] is None, report
        rows = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text("utf-8").splitlines()]
        assert rows[0]["text"] == text and rows[0]["label"] in ("neg", "pos")
        return report["growth"]

    short = run("a short review", 2048 * MB)
    long = run("word " * (4 * MB), short + 200 * MB)
    assert long - short < 200 * MB, (short / MB, long / MB)


# ---- data hygiene ---------------------------------------------------------------------------


def test_labels_1_and_1_0_and_01_are_one_class(tmp_path):
    path = tmp_path / "mixed.jsonl"
    written = [(1, 1), ("1", 1), ("1.0", 1), ("01", 1), (1.0, 1), ("+1", 1)]
    written += [(0, 0), ("0", 0), ("0.0", 0), ("-0", 0)]
    rows = [(f"row {i}", label, cls) for i, (label, cls) in enumerate(written * 4)]
    path.write_text(
        "".join(json.dumps({"text": t, "label": label}) + "\n" for t, label, _ in rows),
        encoding="utf-8",
    )
    td = load_task_data(DataSource(str(path)))
    assert td.task.label_names == ("0", "1")
    got = {ex.text_a: ex.label for ex in (*td.train, *td.dev)}
    assert got == {t: cls for t, _, cls in rows}
    csv = tmp_path / "decimals.csv"
    csv.write_text(
        "text,label\n" + "".join(f"r{i},{v}\n" for i, v in enumerate(["1.5", "1.50", "2"] * 8)),
        encoding="utf-8",
    )
    assert load_task_data(DataSource(str(csv))).task.label_names == ("1.5", "2")


@pytest.mark.parametrize("blank", ["", "   ", "\t \u3000"])
def test_an_empty_text_is_refused_with_its_row(tmp_path, blank):
    path = tmp_path / "blank.jsonl"
    rows = [{"text": f"row {i}", "label": i % 2} for i in range(20)]
    rows[6]["text"] = blank
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"row 7: the text in column 'text' is empty"):
        load_task_data(DataSource(str(path)))


def test_an_empty_second_text_of_a_pair_is_refused_too(tmp_path):
    path = tmp_path / "pairs.csv"
    body = "".join(f"a{i},{'' if i == 3 else f'b{i}'},{i % 2}\n" for i in range(20))
    path.write_text("text,text_pair,label\n" + body, encoding="utf-8")
    with pytest.raises(ConfigError, match=r"row 4: the text in column 'text_pair' is empty"):
        load_task_data(DataSource(str(path)))


def test_empty_texts_exit_2_from_the_cli(tmp_path, tiny_checkpoint, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "blank.csv"
    path.write_text("text,label\n" + "".join(f"t{i},{i % 2}\n" for i in range(20)) + " ,1\n")
    argv = ["evaluate", "--data", str(path), "--model", tiny_checkpoint, "--sparsity", "0"]
    assert main([*argv, "--cache-dir", str(tmp_path / "cache")]) == 2
    err = capsys.readouterr().err
    assert "row 21" in err and "empty" in err and "Traceback" not in err, err


# ---- reading files --------------------------------------------------------------------------


def test_a_symlink_loop_is_named_as_such(tmp_path, capsys):
    loop = tmp_path / "loop.csv"
    loop.symlink_to(tmp_path / "loop.csv")
    with pytest.raises(DataNotFoundError, match="symbolic link loop"):
        DataSource(str(loop))
    dangling = tmp_path / "gone.csv"
    dangling.symlink_to(tmp_path / "nowhere.csv")
    with pytest.raises(DataNotFoundError, match="symbolic link to .*nowhere.csv.*does not exist"):
        DataSource(str(dangling))
    assert main(["evaluate", "--data", str(loop)]) == 2
    err = capsys.readouterr().err
    assert "symbolic link loop" in err and "Traceback" not in err, err


def test_a_quote_left_open_in_a_csv_is_refused_with_its_row(tmp_path):
    path = tmp_path / "open.csv"
    good = "".join(f"fine {i},{i % 2}\n" for i in range(10))
    path.write_text("text,label\n" + good + '"never closed,1\n' + "more text,0\n" * 200_000)
    with pytest.raises(ConfigError, match=r"row 11: a field of more than the limit of 1,048,576"):
        load_task_data(DataSource(str(path)))


def test_a_long_value_is_refused_in_every_format(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    texts = [f"t{i}" for i in range(20)]
    texts[4] = "x" * (MAX_VALUE_CHARS + 1)
    pq.write_table(pa.table({"text": texts, "label": [i % 2 for i in range(20)]}),
                   tmp_path / "long.parquet")  # fmt: skip
    with pytest.raises(ConfigError, match=r"row 5, column 'text': a value of 1,048,577"):
        load_task_data(DataSource(str(tmp_path / "long.parquet")))
    # the longest value kept is read whole, and tokenised as its cut
    texts[4] = "word " * (MAX_VALUE_CHARS // 5)
    pq.write_table(pa.table({"text": texts, "label": [i % 2 for i in range(20)]}),
                   tmp_path / "ok.parquet")  # fmt: skip
    td = load_task_data(DataSource(str(tmp_path / "ok.parquet")))
    assert max(len(ex.text_a) for ex in (*td.train, *td.dev)) == len(texts[4].strip())


def test_a_jsonl_line_ends_at_a_newline_only(tmp_path):
    """U+2028 is valid inside a JSON string; it does not end a JSONL line."""
    path = tmp_path / "sep.jsonl"
    rows = [{"text": f"first\u2028second {i}", "label": i % 2} for i in range(20)]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    td = load_task_data(DataSource(str(path)))
    assert all("\u2028" in ex.text_a for ex in (*td.train, *td.dev))


def test_the_load_generator_scores_a_server_that_answers_class_names(tokenizer):
    """The load generator's labels are class indices: against a server that answers names it
    compares the indices the server sends beside them."""
    from test_serving import loadgen, tiny_ensemble

    from autoprumux.student_server import FixedPolicy, ServingConfig, StudentServer

    burst_schedule, run_load = loadgen().burst_schedule, loadgen().run_load

    texts = ["a gripping, funny film", "dull", "not good", "i laughed, i cried"]
    ids = _ask_students(tokenizer, texts)["labels"]
    examples = list(zip(texts, ids, strict=True))  # the model's own answers: 100% accurate
    sched = burst_schedule(
        steady_rps=20, burst_rps=20, steady_s=0.3, burst_s=0.1, texts_per_request=2,
        request_timeout_s=3.0, max_duration_s=5.0, concurrency=4,
    )  # fmt: skip
    cfg = ServingConfig(port=0, max_seq_len=SEQ, max_wait_ms=0.0)
    names = ("neg", "pos")
    with StudentServer(
        tiny_ensemble(2), tokenizer, FixedPolicy(2), config=cfg, label_names=names
    ) as srv:
        rep = run_load("127.0.0.1", srv.port, examples, sched)
    assert rep.answered > 0 and rep.accuracy == pytest.approx(100.0)
