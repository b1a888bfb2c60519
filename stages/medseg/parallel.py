"""Ordered parallel map over forked worker processes, safe with OpenCV.

``ordered_map(fn, jobs, workers)`` yields ``fn(job)`` in job order, computed
by ``workers`` processes (in-process when ``workers == 1``). Yielding in
submission order, not completion order, is what makes stage outputs
independent of the worker count and of timing.
"""
from __future__ import annotations

import collections
import contextlib
import multiprocessing
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from typing import TypeVar

import cv2

J = TypeVar("J")
R = TypeVar("R")


@contextlib.contextmanager
def opencv_single_threaded() -> Iterator[None]:
    """Run OpenCV on one thread inside the block, restoring the setting after.

    The pool already fills the cores, so OpenCV's own threads only add
    contention. It also makes forking safe: a child forked while OpenCV's
    thread pool is alive inherits its locks mid-state and deadlocks in its
    first cv2 call. "spawn" would avoid that, but every spawned worker
    re-imports albumentations, which imports torch (~4 s on two cores).
    """
    previous = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        yield
    finally:
        cv2.setNumThreads(previous)


def ordered_map(fn: Callable[[J], R], jobs: Iterable[J], workers: int) -> Iterator[R]:
    """``map(fn, jobs)`` over ``workers`` forked processes, results in job order."""
    with opencv_single_threaded():
        if workers <= 1:
            for job in jobs:
                yield fn(job)
            return
        # ProcessPoolExecutor rather than multiprocessing.Pool: Pool.terminate(),
        # its only early exit, can hang, and a killed worker hangs Pool forever.
        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"))
        try:
            # A bounded window of futures keeps memory flat on large datasets.
            window: collections.deque[Future[R]] = collections.deque()
            for job in jobs:
                window.append(pool.submit(fn, job))
                if len(window) >= 4 * workers:
                    yield window.popleft().result()
            while window:
                yield window.popleft().result()
        finally:
            # After an error downstream, drop the queued work instead of finishing it.
            pool.shutdown(wait=True, cancel_futures=True)
