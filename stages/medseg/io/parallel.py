"""Ordered parallel map over forked worker processes, safe with OpenCV.

``ordered_map(fn, jobs, workers)`` yields ``fn(job)`` in job order, computed
by ``workers`` processes (in-process when ``workers == 1``). Yielding in
submission order, not completion order, is what makes stage outputs
independent of the worker count and of timing.

Interruption: the workers hold no outputs, so they die at once on SIGTERM
and ignore Ctrl-C; the parent alone unwinds (deleting its temporary outputs).
SIGINT and SIGTERM are held back while the workers are forked (``_start_pool``):
a signal raised in the middle of the fork left the pool waiting for a worker
it never registered, or a worker waiting for work after the stage had gone.
"""
from __future__ import annotations

import collections
import contextlib
import multiprocessing
import signal
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from typing import TypeVar

import cv2

from .signals import STOP_SIGNALS, defer_stops

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
        pool = _start_pool(workers)
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


def _start_pool(workers: int) -> ProcessPoolExecutor:
    """A pool with every worker forked, none of them left alive by a stop that came meanwhile.

    ProcessPoolExecutor rather than multiprocessing.Pool: Pool.terminate(), its only
    early exit, can hang, and a killed worker hangs Pool forever. While forking, stops
    are blocked and the stage's handlers deferred (Python runs a handler a few
    instructions after the signal, so one that came just before the block would
    otherwise raise in the middle of the fork). A stop sent to the process group
    meanwhile missed the workers forked after it: they are killed, or they would wait
    for work forever, outliving the stage or keeping it from exiting. Then the stop
    is taken, as the stage's handler says.
    """
    stops = defer_stops()
    held = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        try:
            before = set(multiprocessing.active_children())
            pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"),
                                       initializer=_worker_signals)
            pool.submit(_nothing)  # forks every worker now (the "fork" context starts them all at once)
            if stops.caught or signal.sigpending() & set(STOP_SIGNALS):
                for worker in set(multiprocessing.active_children()) - before:
                    worker.kill()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)  # a stop still pending is recorded now
    except BaseException:
        stops.release()
        raise
    try:
        stops.release()  # and taken here
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    return pool


def _worker_signals() -> None:
    """In each worker: die on SIGTERM, leave Ctrl-C to the parent, then take signals again."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


def _nothing() -> None:
    return None
