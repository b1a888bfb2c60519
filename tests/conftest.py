"""Shared test helpers: the real sample datasets, tiny image writers, a local HTTP server, a clone to run DVC in."""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from medseg.config import RemoteFile

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "datasets"


def shared_dataset(name: str) -> Path:
    """Path to a sample in ../shared/datasets, or skip the test with the reason."""
    path = SHARED / name
    if not path.is_dir():
        pytest.skip(f"{path} is absent: the real-data samples live beside the repo, not in it")
    return path


def save(path: Path, array: np.ndarray, mode: str | None = None, **kwargs) -> Path:
    """Write an image with Pillow (so tests control the exact file format)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode=mode).save(path, **kwargs) if mode else Image.fromarray(array).save(path, **kwargs)
    return path


def ramp(h: int = 24, w: int = 32, channels: int = 3) -> np.ndarray:
    """A deterministic test picture."""
    y, x = np.mgrid[0:h, 0:w]
    grey = ((x * 7 + y * 3) % 256).astype(np.uint8)
    return grey if channels == 1 else np.stack([grey, 255 - grey, grey // 2], axis=2)


def random_checkpoint(path: Path, canvas: tuple[int, int], seed: int, window: tuple[int, int] | None = None,
                      post=None) -> Path:
    """A tiny 1-channel, 3-class U-Net checkpoint with random weights and batch-norm statistics as after training."""
    import torch

    from medseg.config import ModelConfig
    from medseg.model.checkpoint import save_checkpoint
    from medseg.model.factory import build_model
    from medseg.model.postprocess import PLAIN

    config = ModelConfig(base_filters=4, depth=2, stem_stride=2, norm="batch")
    torch.manual_seed(seed)
    model = build_model(config, 1, 3)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
    save_checkpoint(path, model.state_dict(), config, ["background", "a", "b"], 1, canvas, {}, window,
                    PLAIN if post is None else post)
    return path


# --------------------------------------------------------------------------- a real HTTP server on 127.0.0.1
@dataclass
class FileServer:
    """Files served from ``root``; ``faults[name]`` is a queue of misbehaviours, one per request."""

    root: Path
    base_url: str = ""
    faults: dict[str, list[str]] = field(default_factory=dict)
    hits: Counter[str] = field(default_factory=Counter)

    def publish(self, name: str, data: bytes, **checksums: str) -> RemoteFile:
        (self.root / name).parent.mkdir(parents=True, exist_ok=True)
        (self.root / name).write_bytes(data)
        if not checksums:
            checksums = {"md5": hashlib.md5(data).hexdigest(), "sha256": hashlib.sha256(data).hexdigest()}
        return RemoteFile(name=Path(name).name, url=f"{self.base_url}/{name}", **checksums)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        state = self.server.state
        name = self.path.lstrip("/").split("?")[0]
        state.hits[name] += 1
        queue = state.faults.get(name, [])
        fault = queue.pop(0) if queue else None
        path = state.root / name
        if fault == "503":
            self.send_error(503, "Service Unavailable")
        elif not path.is_file():
            self.send_error(404, "Not Found")
        else:
            self._send(path.read_bytes(), truncate=fault == "truncate")

    def _send(self, body: bytes, truncate: bool) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if truncate:
            # Promise the whole body, send half, hang up.
            self.wfile.write(body[: len(body) // 2])
            self.close_connection = True
        else:
            self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class _Server(ThreadingHTTPServer):
    state: FileServer


@pytest.fixture(scope="session", autouse=True)
def runtime_cache(tmp_path_factory) -> Iterator[Path]:
    """Train's measured precision choice (``medseg.train.precision``) is cached for this session, not in ~/.cache:
    each test session measures afresh, and every pipeline a test runs in it reads the same cache."""
    path = tmp_path_factory.getbasetemp() / "runtime-cache"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MEDSEG_CACHE_DIR", str(path))
        yield path


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FileServer]:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")  # a proxy from the environment must not intercept
    monkeypatch.setattr("medseg.sources.download.RETRY_BACKOFF_S", 0.01)
    root = tmp_path / "served"
    root.mkdir()
    httpd = _Server(("127.0.0.1", 0), _Handler)
    httpd.state = FileServer(root=root, base_url=f"http://127.0.0.1:{httpd.server_address[1]}")
    # A short poll interval keeps shutdown() from adding half a second per test.
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield httpd.state
    httpd.shutdown()
    httpd.server_close()
    thread.join()


# --------------------------------------------------------------------------- the pipeline in a temporary clone
def run(cmd: list[str], cwd: Path, timeout: float = 900) -> str:
    """Run ``cmd`` (dvc, git, ...) as a user would in ``cwd``; stdout + stderr, or fail with both."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.pop("MLFLOW_TRACKING_URI", None)  # the clone's own sqlite store
    env.update(GIT_AUTHOR_NAME="test", GIT_AUTHOR_EMAIL="test@localhost", GIT_COMMITTER_NAME="test",
               GIT_COMMITTER_EMAIL="test@localhost", DVC_NO_ANALYTICS="1")
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout + proc.stderr


def ran_stages(output: str) -> set[str]:
    """The stages ``dvc repro`` output says it ran (not those it skipped or restored)."""
    return set(re.findall(r"Running stage '([^']+)'", output))


def edit_params(repo: Path, change: Callable[[dict], None]) -> None:
    path = repo / "params.yaml"
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def shrink(data: dict, per_class: int = 4, image: tuple[int, int] | None = (96, 128), copies: int = 2,
           epochs: int = 2, previews: int = 2, overlays: int = 2, bootstrap: int = 50) -> None:
    """Edit loaded params so the default pipeline runs in seconds: ``synthetic`` only, ``per_class`` images
    per class (``image`` = (height, width); None keeps the default size), a 64x64 training canvas, a 4-filter
    2-level U-Net for ``epochs`` epochs of 12 steps (the plan still chooses the stem, patch and class weights)."""
    data["active"] = ["synthetic"]
    source = data["datasets"]["synthetic"]["source"]
    source["counts"] = {"Benign": per_class, "Malignant": per_class, "Normal": per_class}
    if image is not None:
        source.update(height=image[0], width=image[1])
    data["augment"].update(copies=copies, size=[64, 64], shard_size=10)
    data["train"].update(epochs=epochs, steps_per_epoch=12, batch_size=4, preview_images=previews,
                         model={**data["train"]["model"], "base_filters": 4, "depth": 2})
    data["evaluate"].update(bootstrap=bootstrap, overlays=overlays)


def clone_work_tree(dst: Path, change: Callable[[dict], None]) -> Path:
    """Copy the working tree's files (tracked or not ignored) into ``dst``, edit params, commit as a fresh repo.

    Untracked pipeline results of the working tree (``dvc.lock``, files under
    ``data/``, ``models/``, ``metrics/`` from a local ``dvc repro``) stay behind:
    the clone starts as a fresh checkout does.
    """
    def listed(*which: str) -> list[bytes]:
        out = subprocess.run(["git", "ls-files", "-z", *which], cwd=REPO, capture_output=True, check=True).stdout
        return list(filter(None, out.split(b"\0")))

    results = (b"dvc.lock", b"data/", b"models/", b"metrics/")
    files = listed("--cached") + [n for n in listed("--others", "--exclude-standard") if not n.startswith(results)]
    for name in files:
        src = REPO / os.fsdecode(name)
        if src.is_file():
            (dst / os.fsdecode(name)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / os.fsdecode(name))
    edit_params(dst, change)
    run(["git", "init", "-q"], dst)
    run(["git", "add", "-A"], dst)
    run(["git", "commit", "-qm", "clone"], dst)
    return dst
