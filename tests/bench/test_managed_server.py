"""A benchmark's own server: stopped with its benchmark, however the benchmark is stopped."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from bench.managed_server import REPO_ROOT

# A benchmark in miniature: a server, then a long wait inside try/finally, as they all run.
GUARDED = """
import sys, time
from bench.managed_server import ManagedServer
server = ManagedServer(180, False, env={"ANAMNESIS_DB__URL": sys.argv[1]})
server.start()
print(server.pid, server.root, flush=True)
try:
    time.sleep(600)
finally:
    server.stop()
"""
# The same stopped where no finally covers it: a SIGTERM can land between start() and the
# try (a CI run caught one there: the test's signal came before the benchmark's next line).
UNGUARDED = """
import sys, time
from bench.managed_server import ManagedServer
server = ManagedServer(180, False, env={"ANAMNESIS_DB__URL": sys.argv[1]})
server.start()
print(server.pid, server.root, flush=True)
time.sleep(600)
"""


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
async def url(database_factory: Callable[[str], Awaitable[str]]) -> str:
    return await database_factory("bench_sigterm")


@pytest.mark.parametrize("benchmark_code", [GUARDED, UNGUARDED], ids=["in-finally", "outside"])
def test_a_benchmark_stopped_with_sigterm_stops_its_server(url: str, benchmark_code: str) -> None:
    benchmark = subprocess.Popen([sys.executable, "-c", benchmark_code, url], cwd=REPO_ROOT,
                                 env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
                                 stdout=subprocess.PIPE, text=True)
    pid, root = None, None
    try:
        assert benchmark.stdout is not None
        pid_text, root = benchmark.stdout.readline().split()
        pid = int(pid_text)
        assert alive(pid)
        benchmark.send_signal(signal.SIGTERM)
        assert benchmark.wait(timeout=120) == 128 + signal.SIGTERM
        deadline = time.monotonic() + 10
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not alive(pid)
        assert not Path(root).exists()
    finally:
        benchmark.kill()
        benchmark.wait()
        if pid is not None and alive(pid):  # failed: leave no server for the other tests
            os.kill(pid, signal.SIGKILL)
        if root is not None:
            shutil.rmtree(root, ignore_errors=True)
