"""A screenshot of the MLflow dashboard as `autoprumux ui` opens it, taken by headless Chromium.

    python benchmarks/dashboard_screenshot.py --workdir DIR [--out docs/dashboard.png]
        [--replay benchmarks/results/main_job_sst2_cpu.json] [--pareto-out PNG] [--first-visit]

DIR is where a search ran (it holds mlruns/mlflow.db, e.g. after the README's first command).
With `--replay RECORD` and no store in DIR, the store is made first by replaying a recorded
main job (`benchmarks/main_job.py`'s JSON) through the real search, nothing trained: its
trials, in their order, with their recorded configurations, dev and validation losses and
speedups (the study is named `quick-sst2-replayed`; its baseline metric is a stand-in, the
losses are the recorded ones).

The script starts `autoprumux ui` there on a free loopback port, waits until the server answers,
points Chromium (Debian's `chromium` package) at the page `ui` prints for the latest study's
trials, saves it as a PNG, and stops the server; `--pareto-out` also saves the page `ui` prints
for the study's Pareto plot. Chromium is driven over its DevTools pipe (no other package): the
page is captured once its runs table has rows. MLflow 3.17 opens its Assistant pane on a
browser's first visit to a loopback server and keeps it closed once the user closes it (in the
page's localStorage); the screenshot shows the page as it is after that first close, and
`--first-visit` as a fresh browser shows it.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fcntl
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# what MLflow 3.17's UI keeps once the user closed its Assistant pane (`useLocalStorage`
# keys, `<key>_v<version>`)
ASSISTANT_CLOSED = {
    "mlflow.assistant.fab.autoOpenedOnFirstLoad_v1": "true",
    "mlflow.assistant.panelOpen_v1": "false",
}
REPLAY_STUDY = "quick-sst2-replayed"
REPLAY_BASELINE = 83.94  # a stand-in: the view shows losses, not the metric itself


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until_up(url: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {seconds:.0f} s")


# ---- a recorded main job, replayed into a store ----------------------------------------------
class RecordedTrials:
    """A trial evaluator (`autoprumux.search.TrialEvaluator`) answering each configuration of
    a recorded main job with its recorded dev and validation losses and speedup."""

    model_id = "replay:all-MiniLM-L6-v2"
    dev_size = 872
    validation_size = 0

    def __init__(self, trials: list[dict[str, Any]]):
        from autoprumux.config import Candidate

        self.by_config = {Candidate.from_dict(t["config"]): t for t in trials}

    def descriptors(self) -> dict[str, float]:
        return {
            "task_num_labels": 2,
            "task_pair": 0,
            "task_mcc": 0,
            "task_log_train": round(math.log(67349), 6),
            "model_layers": 6,
            "model_hidden": 384,
            "model_log_params": round(math.log(1.78e7), 6),
            "device_cuda": 0,
        }

    def check_lengths(self, n: int, tp: Any = None) -> None:
        return None

    def baseline_metrics(self) -> dict[str, float]:
        return {"metric": REPLAY_BASELINE, "accuracy": REPLAY_BASELINE}

    def evaluate(self, config: Any, *, throughput: Any = None, on_stage: Any = None) -> Any:
        from autoprumux.config import ThroughputConfig
        from autoprumux.evaluation import Evaluation, Measured

        t = self.by_config[config]
        base = REPLAY_BASELINE

        def measured(name: str, dev_loss: float, val_loss: float, rate: float) -> Measured:
            return Measured(
                name,
                config.sparsity,
                config.mux,
                base - dev_loss,
                base - dev_loss,
                rate,
                1.0 / rate,
                0,
                1.0 / rate,
                validation_metric=base - val_loss,
                validation_accuracy=base - val_loss,
            )

        return Evaluation(
            task="sst2",
            metric_name="accuracy",
            device="cpu",
            baseline=measured("baseline", 0.0, 0.0, 1.0),
            candidate=measured(
                config.describe(), t["accuracy_loss"], t["validation_loss"], t["speedup"]
            ),
            throughput_config=throughput or ThroughputConfig(),
        )

    def evaluate_students(self, k: int, depth: int, **kw: Any) -> Any:
        raise RuntimeError("the recorded main job holds no students")


def replay_store(workdir: Path, record: Path) -> None:
    """A study in workdir's default stores made of the recorded main job's trials."""
    from autoprumux import tracking
    from autoprumux.search import Searcher, SearchSettings, SearchSpace
    from autoprumux.search._measure import trial_params

    doc = json.loads(record.read_text(encoding="utf-8"))
    trials = [t for t in doc["trials"] if t["state"] == "COMPLETE"]
    space_file = re.search(r"--space (\S+)", doc["command"])
    sampler = re.search(r"--sampler (\S+)", doc["command"])
    workdir.mkdir(parents=True, exist_ok=True)
    settings = SearchSettings(
        space=SearchSpace.from_yaml(ROOT / (space_file.group(1) if space_file else "x")),
        trials=len(trials),
        storage=tracking.default_storage(workdir),
        study_name=REPLAY_STUDY,
        tracking_uri=tracking.default_tracking_uri(workdir),
        budget=float(doc["budget"]),
        sampler=sampler.group(1) if sampler else "guided",
        show_progress=False,
    )
    evaluator = RecordedTrials(trials)
    searcher = Searcher(settings, evaluator=lambda variant: evaluator)
    for cfg in evaluator.by_config:  # in the recorded order
        searcher.study.enqueue_trial(trial_params(searcher, cfg))
    searcher.run()


# ---- Chromium over its DevTools pipe -----------------------------------------------------------
class Chromium:
    """Headless Chromium driven over `--remote-debugging-pipe` (JSON messages ending in NUL on
    its fds 3 and 4), one page attached."""

    def __init__(self, binary: str, width: int, height: int):
        to_r, to_w = os.pipe()
        from_r, from_w = os.pipe()
        # above fd 10, so that placing them at 3 and 4 in the child cannot clobber one another
        child_in = fcntl.fcntl(to_r, fcntl.F_DUPFD_CLOEXEC, 10)
        child_out = fcntl.fcntl(from_w, fcntl.F_DUPFD_CLOEXEC, 10)
        os.close(to_r)
        os.close(from_w)
        self.profile = tempfile.mkdtemp(prefix="dashboard-chromium-")

        def fds() -> None:
            os.dup2(child_in, 3)
            os.dup2(child_out, 4)

        self.proc = subprocess.Popen(
            [
                binary,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
                "--no-first-run",
                "--remote-debugging-pipe",
                f"--user-data-dir={self.profile}",
                f"--window-size={width},{height}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            close_fds=False,  # fds 3 and 4 (Python's own are not inheritable)
            preexec_fn=fds,
            start_new_session=True,
        )
        os.close(child_in)
        os.close(child_out)
        self.w, self.r = to_w, from_r
        self.buf = b""
        self.next_id = 0
        page = next(t for t in self.call("Target.getTargets")["targetInfos"] if t["type"] == "page")
        self.session = self.call("Target.attachToTarget", targetId=page["targetId"], flatten=True)[
            "sessionId"
        ]
        self.page("Emulation.setDeviceMetricsOverride", width=width, height=height,
                  deviceScaleFactor=1, mobile=False)  # fmt: skip

    def call(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        msg: dict[str, Any] = {"id": self.next_id, "method": method, "params": params}
        if session:
            msg["sessionId"] = session
        os.write(self.w, json.dumps(msg).encode() + b"\0")
        while True:  # events come between the replies: skipped
            reply = self._read()
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return dict(reply.get("result", {}))

    def page(self, method: str, **params: Any) -> dict[str, Any]:
        return self.call(method, self.session, **params)

    def _read(self) -> dict[str, Any]:
        while b"\0" not in self.buf:
            chunk = os.read(self.r, 1 << 20)
            if not chunk:
                raise EOFError("chromium closed its DevTools pipe")
            self.buf += chunk
        msg, _, self.buf = self.buf.partition(b"\0")
        return dict(json.loads(msg))

    def evaluate(self, expression: str) -> Any:
        return self.page("Runtime.evaluate", expression=expression, returnByValue=True)[
            "result"
        ].get("value")

    def screenshot(self, url: str, out: Path, ready: str, seconds: float) -> None:
        """Open url, wait until the JavaScript `ready` is true (or `seconds` passed), let the
        page settle and save it as a PNG."""
        self.page("Page.navigate", url=url)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not self.evaluate(ready):
            time.sleep(0.5)
        time.sleep(3)  # the table's columns and the charts' layout
        png = self.page("Page.captureScreenshot", format="png")["data"]
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(base64.b64decode(png))

    def close(self) -> None:
        with contextlib.suppress(OSError, EOFError, RuntimeError):
            self.call("Browser.close")
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        os.close(self.w)
        os.close(self.r)
        shutil.rmtree(self.profile, ignore_errors=True)


def start_ui(workdir: Path, port: int) -> tuple[subprocess.Popen, list[str]]:
    """`autoprumux ui` in workdir, and the list its output lines are read into (the pages it
    prints come before the server starts)."""
    ui = subprocess.Popen(
        [sys.executable, "-m", "autoprumux.cli", "ui", "--port", str(port)],
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        start_new_session=True,
    )
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(ui.stdout or ()), daemon=True).start()
    return ui, lines


def printed_pages(lines: list[str]) -> dict[str, str]:
    """The pages `ui` printed: the latest study's trials and its Pareto plot, by name."""
    pages = {}
    for line in list(lines):
        if m := re.match(r"the latest study's trials: (\S+)", line):
            pages["trials"] = m.group(1)
        elif m := re.match(r"its Pareto front: (\S+)", line):
            pages["pareto"] = m.group(1)
    return pages


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--workdir", type=Path, required=True, help="where the search ran")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "dashboard.png")
    ap.add_argument("--replay", type=Path, help="a main job's JSON, replayed when DIR has no store")
    ap.add_argument("--pareto-out", type=Path, help="also the study's Pareto plot page")
    ap.add_argument("--first-visit", action="store_true", help="as a fresh browser opens it")
    ap.add_argument("--chromium", default=shutil.which("chromium") or "chromium")
    ap.add_argument("--size", default="1400,900", help="window width,height")
    ap.add_argument("--wait-s", type=float, default=60, help="longest wait for the runs table")
    args = ap.parse_args(argv)
    db = args.workdir / "mlruns" / "mlflow.db"
    if not db.is_file() and args.replay is not None:
        replay_store(args.workdir, args.replay)
    if not db.is_file():
        print(f"{db} does not exist: run a search in {args.workdir} first", file=sys.stderr)
        return 2
    if shutil.which(args.chromium) is None:
        print("chromium not found: apt-get install chromium (or pass --chromium)", file=sys.stderr)
        return 2
    port = free_port()
    ui, lines = start_ui(args.workdir, port)
    browser = None
    try:
        wait_until_up(f"http://127.0.0.1:{port}/health", 90)
        pages = printed_pages(lines)
        if "trials" not in pages:
            print(f"no autoprumux study in {db}: run a search there first", file=sys.stderr)
            return 2
        width, height = (int(x) for x in args.size.split(","))
        browser = Chromium(args.chromium, width, height)
        if not args.first_visit:
            browser.page("Page.enable")
            keys = json.dumps(ASSISTANT_CLOSED)
            browser.page(
                "Page.addScriptToEvaluateOnNewDocument",
                source=f"try {{ for (const [k, v] of Object.entries({keys})) "
                "localStorage.setItem(k, v); } catch (e) {}",
            )
        rows = "document.querySelectorAll('.ag-center-cols-container .ag-row').length > 0"
        browser.screenshot(pages["trials"], args.out, rows, args.wait_s)
        print(f"{pages['trials']} -> {args.out}")
        if args.pareto_out is not None and "pareto" in pages:
            image = "Array.from(document.images).some(i => i.complete && i.naturalWidth > 0)"
            browser.screenshot(pages["pareto"], args.pareto_out, image, args.wait_s)
            print(f"{pages['pareto']} -> {args.pareto_out}")
    finally:
        if browser is not None:
            browser.close()
        os.killpg(ui.pid, signal.SIGTERM)
        ui.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
