"""An `anamnesis serve` the benchmarks start and stop themselves, and facts about the machine."""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:  # the settings are read lazily: bench.gpu imports this module without them
    from app.config import Settings

REPO_ROOT = Path(__file__).resolve().parents[1]


_progress_label = "http_load"


def set_progress_label(label: str) -> None:
    """Name the benchmark in front of progress lines (``[http_load]`` unless set)."""
    global _progress_label
    _progress_label = label


def progress(message: str) -> None:
    print(f"[{_progress_label}] {message}", file=sys.stderr, flush=True)


def anamnesis_command() -> list[str]:
    beside = Path(sys.executable).parent / "anamnesis"
    if beside.exists():
        return [str(beside)]
    found = shutil.which("anamnesis")
    if found:
        return [found]
    return [sys.executable, "-m", "app.cli"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _exit_on_sigterm() -> None:
    """A benchmark stopped with SIGTERM (``kill``, ``timeout``) exits as on Ctrl-C, through its
    ``finally`` blocks and exit handlers, so the servers it started (and their Postgres and
    bundled LLM) stop with it; Python's default for SIGTERM is to die on the spot and leave
    them running."""
    def leave(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        with contextlib.suppress(ValueError):  # not the main thread: its owner decides
            signal.signal(signal.SIGTERM, leave)


class ManagedServer:
    """`anamnesis serve` on a free port over a throwaway data directory."""

    def __init__(self, startup_timeout_s: float, keep_data: bool,
                 env: dict[str, str] | None = None, *, query_cache: bool = False,
                 root: Path | None = None):
        """``env``: extra environment variables for the server (and ``keys create``).
        ``query_cache``: keep the server's query-embedding cache. Off by default: benchmark
        questions repeat (the synthetic ones, and every ranking asks LoCoMo's again), and a
        cached question skips its embedding, which a fresh question never does. ``root``: the
        folder an earlier ``keep_data`` server kept, to serve its data again (and keep it)."""
        self.startup_timeout_s = startup_timeout_s
        self.keep_data = keep_data or root is not None
        _exit_on_sigterm()
        self.root = root or Path(tempfile.mkdtemp(prefix="anamnesis-bench-"))
        # Stopped at exit too: a SIGTERM that lands outside the benchmark's try/finally (between
        # the mkdtemp and the try, or right after start()) still unwinds as SystemExit, and the
        # interpreter runs this on its way out.
        atexit.register(self.stop)
        # The bundled Postgres runs as another user when we are root: it must reach the folder.
        self.root.chmod(0o755)
        self.data_dir = self.root / "data"
        self.log_path = self.root / "server.log"
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        # The server runs this checkout's code, as the benchmark does: a virtual environment
        # with the project installed editable from another checkout would otherwise give
        # its `anamnesis` script that checkout's `app`.
        python_path = [str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
        self.env = {**os.environ, "PYTHONPATH": os.pathsep.join(python_path),
                    "ANAMNESIS_DATA_DIR": str(self.data_dir),
                    **({} if query_cache else {"ANAMNESIS_SEARCH__QUERY_CACHE_SIZE": "0"}),
                    **(env or {})}
        self.process: subprocess.Popen[bytes] | None = None
        self.startup_s: float | None = None

    def start(self) -> None:
        command = [*anamnesis_command(), "serve", "--host", "127.0.0.1", "--port", str(self.port)]
        progress(f"starting {' '.join(command)} (data {self.data_dir}, log {self.log_path})")
        started = time.perf_counter()
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                command, cwd=REPO_ROOT, env=self.env, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + self.startup_timeout_s
        with httpx.Client(base_url=self.base_url, timeout=5.0, trust_env=False) as client:
            for path in ("/health", "/ready"):
                while True:
                    if self.process.poll() is not None:
                        raise RuntimeError(
                            f"server exited with {self.process.returncode} while waiting for "
                            f"{path}:\n{self.log_tail()}"
                        )
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"server not answering 200 on {path} within "
                                           f"{self.startup_timeout_s}s:\n{self.log_tail()}")
                    with contextlib.suppress(httpx.HTTPError):
                        if client.get(path).status_code == 200:
                            break
                    time.sleep(0.25)
        self.startup_s = round(time.perf_counter() - started, 2)
        progress(f"server ready on {self.base_url} after {self.startup_s}s")

    def create_key(self, project: str) -> str:
        """A new admin key of ``project`` (made if it is new)."""
        lines = self._keys("create", "--project", project)
        if not lines:
            raise RuntimeError(f"`anamnesis keys create --project {project}` printed no key")
        return lines[-1].strip()

    def projects(self) -> list[str]:
        """The names of the projects that have keys."""
        return sorted({line.split("\t")[1] for line in self._keys("list") if "\t" in line})

    def _keys(self, *arguments: str) -> list[str]:
        command = [*anamnesis_command(), "keys", *arguments]
        result = subprocess.run(command, cwd=REPO_ROOT, env=self.env, capture_output=True,
                                text=True, check=False, timeout=300)
        if result.returncode != 0:
            raise RuntimeError(f"`anamnesis keys {' '.join(arguments)}` failed "
                               f"({result.returncode}): {result.stderr.strip()[-2000:]}")
        return result.stdout.strip().splitlines()

    def restart(self) -> None:
        """Stops the server (gracefully: it saves what it saves on shutdown) and starts it
        again on the same data; the log goes on in the same file."""
        self._terminate()
        self.start()

    def stop(self) -> None:
        self._terminate()
        if self.keep_data:
            progress(f"kept {self.root}")
        else:
            shutil.rmtree(self.root, ignore_errors=True)
        # Last: a second SIGTERM (``timeout`` passes on the one it got) that cuts this short
        # leaves the exit hook to finish it.
        atexit.unregister(self.stop)

    def _terminate(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                progress("server ignored SIGINT for 60s; terminating it")
                self.process.terminate()
                try:
                    self.process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait()

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""



def rss_mb(pid: int | None) -> float | None:
    if pid is None:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None



def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "httpx": httpx.__version__,
    }
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                info["memory_gb"] = round(int(line.split()[1]) / 1024 / 1024, 1)
                break
    return info




def emit_report(report: dict[str, Any], out: Path | None) -> None:
    """A benchmark's JSON report: printed, and written to ``out`` when given."""
    text = json.dumps(report, indent=2)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
    print(text)


def server_env(items: list[str], llm_url: str | None = None,
               llm_model: str | None = None) -> dict[str, str]:
    """A started server's extra environment: ``--server-env KEY=VALUE`` items, and the LLM
    endpoint a benchmark was pointed at (``--llm-url``/``--llm-model``)."""
    env = dict(item.split("=", 1) for item in items)
    if llm_url:
        env.setdefault("ANAMNESIS_LLM__BASE_URL", llm_url)
        if llm_model:
            env.setdefault("ANAMNESIS_LLM__MODEL", llm_model)
    return env


def server_settings(env: Mapping[str, str]) -> Settings:
    """The settings the started server read: built from its environment."""
    from app.config import Settings

    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        return Settings()
    finally:
        os.environ.clear()
        os.environ.update(saved)


LOG_LINE = re.compile(r"^\S+ \S+ (?P<level>ERROR|WARNING|CRITICAL) (?P<logger>\S+?)"
                      r"(?: \[[^\]]*\])?: (?P<message>.*)$")


def log_lines(path: Path, offset: int) -> list[str] | None:
    """The lines of the log at ``path`` from ``offset`` (bytes) on; None when unreadable."""
    try:
        with path.open("rb") as log:
            log.seek(offset)
            return log.read().decode(errors="replace").splitlines()
    except OSError:
        return None


def log_problems(path: Path, offset: int) -> dict[str, Any]:
    """Warnings and errors the started server logged from ``offset`` (bytes) on, in the text
    format: counts per level and logger, and the first distinct messages."""
    lines = log_lines(path, offset)
    if lines is None:
        return {}
    counts: Counter[str] = Counter()
    samples: dict[str, None] = {}
    for line in lines:
        match = LOG_LINE.match(line)
        if match is None:
            continue
        counts[f"{match['level']} {match['logger']}"] += 1
        if len(samples) < 8:
            samples[f"{match['level']} {match['logger']}: {match['message'][:300]}"] = None
    return {"lines": len(lines), "by_level_and_logger": dict(counts), "samples": list(samples)}


LLM_CALL = re.compile(r"^\S+ \S+ INFO app\.llm(?: \[[^\]]*\])?: LLM call (?P<output>\w+) "
                      r"\(prompt (?P<prompt>\S+)\): (?P<replies>\d+) replies, "
                      r"(?P<prompt_tokens>\d+) prompt \+ (?P<completion_tokens>\d+) completion "
                      r"tokens, (?P<seconds>[\d.]+) s$")


def llm_calls_logged(path: Path, offset: int) -> dict[str, Any]:
    """The started server's LLM calls from ``offset`` (bytes) on, per kind of call (the reply's
    type and prompt version): how many, and per call the replies, tokens and seconds (mean and
    median), read from the line ``app.llm`` logs for each call that succeeded."""
    calls: dict[str, list[re.Match[str]]] = {}
    for line in log_lines(path, offset) or []:
        if (match := LLM_CALL.match(line)) is not None:
            calls.setdefault(f"{match['output']} {match['prompt']}", []).append(match)
    report: dict[str, Any] = {}
    for kind, matches in sorted(calls.items()):
        report[kind] = {"calls": len(matches)}
        for field in ("replies", "prompt_tokens", "completion_tokens", "seconds"):
            values = [float(match[field]) for match in matches]
            report[kind][field] = {"mean": round(statistics.fmean(values), 2),
                                   "p50": round(statistics.median(values), 2)}
    return report


def log_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def checkout() -> dict[str, Any]:
    """The code a started server runs (``ManagedServer`` puts this checkout first)."""
    def git(*command: str) -> str:
        found = subprocess.run(["git", "-C", str(REPO_ROOT), *command], capture_output=True,
                               text=True, check=False, timeout=30)
        return found.stdout.strip()

    return {"path": str(REPO_ROOT), "revision": git("rev-parse", "--short", "HEAD") or None,
            "uncommitted_changes": bool(git("status", "--porcelain", "--untracked-files=no"))}


def pool_settings(settings: Settings) -> dict[str, Any]:
    db = settings.db
    return {"pool_size": db.pool_size, "max_overflow": db.max_overflow,
            "main_pool_max": db.pool_size + db.max_overflow, "pool_timeout_s": db.pool_timeout_s,
            "graph_pool_size": db.graph_pool_size, "index_pool_size": db.index_pool_size,
            "graph_store": "neo4j" if settings.neo4j.url else "postgres",
            "search_index": settings.search.index}
