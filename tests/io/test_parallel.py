"""ordered_map: results in job order, and workers that never keep an interrupted stage alive."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from medseg.io.parallel import ordered_map


def _square(x: int) -> int:
    time.sleep(0.002 * (x % 3))  # finish out of order
    return x * x


def _dispositions(_: int) -> tuple:
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, set())
    return signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT), signal.SIGTERM in blocked


def test_results_come_in_job_order():
    assert list(ordered_map(_square, range(40), 2)) == [x * x for x in range(40)]
    assert list(ordered_map(_square, range(5), 1)) == [0, 1, 4, 9, 16]
    assert list(ordered_map(_square, [], 2)) == []


def test_workers_die_on_sigterm_and_leave_ctrl_c_to_the_parent():
    before = signal.pthread_sigmask(signal.SIG_BLOCK, set())
    got = set(ordered_map(_dispositions, range(4), 2))
    assert got == {(signal.SIG_DFL, signal.SIG_IGN, False)}
    assert signal.pthread_sigmask(signal.SIG_BLOCK, set()) == before  # the parent's mask is restored


STAGE = """
import faulthandler, signal, time
from medseg.io.errors import raise_terminated
from medseg.io.parallel import ordered_map

def work(x):
    time.sleep(0.01)
    return x

signal.signal(signal.SIGTERM, raise_terminated)  # what run_stage installs
faulthandler.register(signal.SIGUSR1, all_threads=True)  # the test asks for the stacks of a stage that hangs
print("ready", flush=True)
while True:  # pools are started over and over, so signals land during forks too
    for _ in ordered_map(work, range(8), 2):
        pass
"""


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_sigterm_at_any_moment_ends_the_stage_and_its_workers(tmp_path):
    """A SIGTERM that landed while the workers were forked left the stage waiting forever, or a worker behind."""
    for delay in [i * 0.007 for i in range(30)]:
        with open(tmp_path / "stderr", "w+b") as err:
            proc = subprocess.Popen([sys.executable, "-c", STAGE], stdout=subprocess.PIPE, stderr=err,
                                    start_new_session=True)
            assert proc.stdout.readline() == b"ready\n"
            time.sleep(delay)
            os.killpg(proc.pid, signal.SIGTERM)  # like `kill` of a job, or DVC's process group
            try:
                code = proc.wait(timeout=30)
                deadline = time.monotonic() + 10
                while _group_alive(proc.pid) and time.monotonic() < deadline:
                    time.sleep(0.05)
                left = _group_alive(proc.pid)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGUSR1)  # the stage's stacks, to see where it waits
                time.sleep(1)
                code, left = None, True
            finally:
                if _group_alive(proc.pid):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                proc.stdout.close()
            err.seek(0)
            stacks = err.read().decode(errors="replace")[-6000:]
        assert code is not None, f"the stage still ran 30 s after SIGTERM at {delay:.3f} s; its threads:\n{stacks}"
        assert code == 128 + signal.SIGTERM, f"exit code {code} after SIGTERM at {delay:.3f} s"
        assert not left, f"a worker outlived the stage stopped at {delay:.3f} s"
