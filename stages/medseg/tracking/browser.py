"""The MLflow UI in a real browser: ``mlflow ui`` on 127.0.0.1 and headless Chromium reading it.

``serve_ui`` starts the UI on a store and yields its address; ``render`` opens a
link in headless Chromium and returns the page's DOM once its scripts have run
(``--dump-dom`` after a virtual-time budget, so the runs table has loaded), or
writes a screenshot. What the page should show is ``medseg.tracking.ui``'s.
"""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

from .ui import ExpectedRow, check_runs_table, runs_page, runs_table

log = logging.getLogger(__name__)

CHROMIUM_ENV = "MEDSEG_CHROMIUM"  # a browser binary other than the first found on PATH
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
# Headless, and quiet on a closed network: without the background-networking
# flags Chromium keeps opening connections that the machine refuses.
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars")
WINDOW = (2200, 800)  # wide enough for the runs table beside the UI's assistant panel
SETTLE_MS = 20_000  # virtual time for the page's requests and rendering
START_S = 120.0  # the first start migrates a new sqlite store
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # 127.0.0.1, never through a proxy


class BrowserError(RuntimeError):
    """Chromium or ``mlflow ui`` did not start or did not answer."""


def find_chromium() -> str | None:
    """The browser to use: ``$MEDSEG_CHROMIUM``, else the first of ``CHROMIUM_NAMES`` on PATH, else ``None``."""
    chosen = os.environ.get(CHROMIUM_ENV)
    if chosen:
        return chosen if shutil.which(chosen) else None
    return next((path for path in map(shutil.which, CHROMIUM_NAMES) if path), None)


def render(url: str, chromium: str, screenshot: Path | None = None, window: tuple[int, int] = WINDOW,
           settle_ms: int = SETTLE_MS, timeout_s: float = 120.0) -> str:
    """The DOM of ``url`` after its scripts ran; with ``screenshot``, a PNG of the page written there instead."""
    with tempfile.TemporaryDirectory(prefix="medseg-chromium-") as profile:
        output = [f"--screenshot={screenshot}"] if screenshot else ["--dump-dom"]
        command = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={window[0]},{window[1]}",
                   f"--virtual-time-budget={settle_ms}", *output, url]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired as exc:
            raise BrowserError(f"{chromium} did not finish {url} within {timeout_s:.0f} s") from exc
    if done.returncode != 0 or (screenshot is not None and not Path(screenshot).is_file()):
        raise BrowserError(f"{chromium} failed on {url} (exit {done.returncode}): {done.stderr.strip()[-2000:]}")
    return done.stdout


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def serve_ui(store_uri: str, log_path: Path, artifacts: Path | None = None) -> Iterator[str]:
    """``mlflow ui`` (one worker) on ``store_uri`` at a free port of 127.0.0.1; yields its base URL.

    With ``artifacts`` it also serves artifacts from that folder (``mlflow
    server --artifacts-destination``). Its output goes to ``log_path``.
    """
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    mlflow = Path(sys.executable).parent / "mlflow"
    command = [str(mlflow), "ui", "--backend-store-uri", store_uri, "--host", "127.0.0.1", "--port", str(port),
               "--workers", "1"]
    if artifacts is not None:
        command += ["--artifacts-destination", str(artifacts)]
    with Path(log_path).open("w") as out:
        # Its own process group: the CLI starts the web server as a child, and both must stop.
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            _wait_until_healthy(url, proc, Path(log_path))
            log.info("mlflow ui on %s at %s", store_uri, url)
            yield url
        finally:
            _stop_group(proc)


def _stop_group(proc: subprocess.Popen) -> None:
    for sig, wait_s in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:  # the whole group has exited
            return
        try:
            proc.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


def _wait_until_healthy(url: str, proc: subprocess.Popen, log_path: Path) -> None:
    deadline = time.monotonic() + START_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BrowserError(f"mlflow ui exited ({proc.returncode}):\n{log_path.read_text()[-4000:]}")
        try:
            with _DIRECT.open(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise BrowserError(f"mlflow ui not healthy at {url} after {START_S:.0f} s:\n{log_path.read_text()[-4000:]}")


def check_in_browser(base_url: str, experiment_id: str, expected: Sequence[ExpectedRow], metric: str,
                     chromium: str, screenshot: Path | None = None) -> tuple[dict[str, dict[str, str]], list[str]]:
    """Open the experiment's runs page as a user would and check each run's row; returns (table, problems)."""
    link = runs_page(base_url, experiment_id)
    table = runs_table(render(link, chromium))
    if screenshot is not None:
        render(link, chromium, screenshot=screenshot)
    return table, check_runs_table(table, expected, metric)
