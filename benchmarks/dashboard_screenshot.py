"""A screenshot of the MLflow dashboard as `autoprumux ui` opens it, taken by headless Chromium.

    python benchmarks/dashboard_screenshot.py --workdir DIR [--out docs/dashboard.png]

DIR is where a search ran (it holds mlruns/mlflow.db, e.g. after the README's first command).
The script starts `autoprumux ui` there on a free loopback port, waits until the server
answers, points Chromium (Debian's `chromium` package) at the study's experiment, saves the
page as a PNG, and stops the server. The experiment opens on its runs, the trials, because
autoprumux tags its experiments as model-training ones (MLflow 3 otherwise opens a GenAI
overview with "Traces 0"), and the page's URL selects MLflow 3's model-training view.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--workdir", type=Path, required=True, help="where the search ran")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "dashboard.png")
    ap.add_argument("--chromium", default=shutil.which("chromium") or "chromium")
    ap.add_argument("--size", default="1400,900", help="window width,height")
    ap.add_argument("--wait-ms", type=int, default=15000, help="time for the page's scripts")
    args = ap.parse_args(argv)
    db = args.workdir / "mlruns" / "mlflow.db"
    if not db.is_file():
        print(f"{db} does not exist: run a search in {args.workdir} first", file=sys.stderr)
        return 2
    if shutil.which(args.chromium) is None:
        print("chromium not found: apt-get install chromium (or pass --chromium)", file=sys.stderr)
        return 2
    from autoprumux import tracking

    exp = tracking.newest_study_experiment(tracking.client(f"sqlite:///{db.resolve()}"))
    if exp is None:
        print(f"no autoprumux study in {db}: run a search there first", file=sys.stderr)
        return 2
    port = free_port()
    ui = subprocess.Popen(
        [sys.executable, "-m", "autoprumux.cli", "ui", "--port", str(port)],
        cwd=args.workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_until_up(f"http://127.0.0.1:{port}/health", 90)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        page = tracking.runs_page(f"http://127.0.0.1:{port}", exp)
        subprocess.run(
            [
                args.chromium,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
                f"--window-size={args.size}",
                f"--virtual-time-budget={args.wait_ms}",
                f"--screenshot={args.out.resolve()}",
                page,
            ],
            check=True,
            capture_output=True,
            timeout=180,
        )
    finally:
        os.killpg(ui.pid, signal.SIGTERM)
        ui.wait(timeout=30)
    print(f"{page} -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
