"""Background threads kept between jobs."""
from __future__ import annotations

import os
import sys
import threading

import pytest

from chest.background import Workers


def test_an_idle_thread_takes_the_next_job():
    workers = Workers("test-reuse")
    first = workers.run(threading.get_ident)
    assert first.wait(10)
    second = workers.run(threading.get_ident)
    assert second.wait(10)
    assert first.result == second.result != threading.get_ident()


def test_jobs_at_once_do_not_wait_for_each_other():
    workers = Workers("test-parallel")
    release = threading.Event()
    blocked = workers.run(release.wait, 10)
    other = workers.run(sum, [1, 2])
    assert other.wait(10) and other.result == 3  # while the first still waits
    assert not blocked.wait(0)
    release.set()
    assert blocked.wait(10) and blocked.result is True


def test_an_error_is_kept_for_the_caller():
    job = Workers("test-error").run(int, "x")
    assert job.wait(10)
    assert isinstance(job.error, ValueError) and job.result is None


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # (3.12: fork with threads)
@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork here")
def test_a_forked_child_gets_threads_of_its_own():
    workers = Workers("test-fork")
    assert workers.run(sum, [1]).wait(10)  # an idle thread in the parent
    pid = os.fork()
    if pid == 0:  # the child: the parent's idle thread does not exist here
        ok = False
        try:
            ok = workers.run(sum, [2, 3]).wait(10)
        finally:
            os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0
    assert workers.run(sum, [4]).wait(10)  # the parent's still works
