"""A real Neo4j Community 5 server for the tests: the embedded database with its Bolt connector
(``scripts/neo4j/Launcher.java``), its jars resolved from Maven Central by ``mvn`` on
``scripts/neo4j/pom.xml``. Needs ``java`` 17+ (with ``javac``) and ``mvn``; no Docker.

    with Neo4jServer(data_dir) as server:
        driver = neo4j.AsyncGraphDatabase.driver(server.url, auth=(server.user, server.password))

What is prepared once and cached outside the repository (``$ANAMNESIS_NEO4J_CACHE``, else
``$XDG_CACHE_HOME/anamnesis/neo4j``, else ``~/.cache/anamnesis/neo4j``), so that a fresh clone
on the same machine skips all of it:

- the classpath that ``mvn dependency:build-classpath`` resolves, keyed by the pom's hash and
  reused while every jar it names still exists (``mvn -o`` first, online only when that fails);
- ``Launcher.java`` compiled into a jar, and a class-data-sharing archive of the JVM's loaded
  classes written when the first server stops (it cuts later starts by about a third), both
  keyed by the pom, the launcher and the ``java`` binary.

Preparation holds a file lock, so concurrent test sessions share one cache. The server stops when
its stdin closes, so it cannot outlive the process that started it, even one killed with
SIGKILL. ``python -m tests.neo4j_server --prefetch`` prepares the cache and starts and stops a
server once (standard library only, so it runs before the virtualenv exists).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, NamedTuple

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts" / "neo4j"
POM = SCRIPTS / "pom.xml"
LAUNCHER = SCRIPTS / "Launcher.java"
READY = re.compile(r"^anamnesis-neo4j ready bolt_port=(\d+) version=(\S+)", re.MULTILINE)
DEFAULT_USER = "neo4j"
DEFAULT_PASSWORD = "anamnesis-test"
# A modest heap and the C1 compiler only: the tests need a quick start, not peak throughput.
JVM_OPTIONS = (
    "-Xms64m",
    "-Xmx512m",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-XX:-UsePerfData",
    "--add-opens=java.base/java.nio=ALL-UNNAMED",
    "--add-opens=java.base/sun.nio.ch=ALL-UNNAMED",
)
MAVEN_TIMEOUT_S = 900.0


class Neo4jServerError(RuntimeError):
    """Java or Maven is missing, the jars did not resolve, or the server did not start."""


class Neo4jEndpoint(NamedTuple):
    url: str
    user: str
    password: str


@dataclass(frozen=True)
class Runtime:
    """What starting a server needs: the java binary, an argument file holding the classpath
    (too long for comfort on a command line), and the class-data-sharing archive path."""

    java: str
    argfile: Path
    class_archive: Path


def cache_root() -> Path:
    configured = os.environ.get("ANAMNESIS_NEO4J_CACHE")
    if configured:
        return Path(configured)
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "anamnesis" / "neo4j"


def tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no {path})"
    return "\n".join(text.splitlines()[-lines:])


def require_tool(name: str, hint: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise Neo4jServerError(f"`{name}` is not on PATH: {hint}")
    return found


def digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(hashlib.sha256(part).digest())
    return h.hexdigest()[:16]


@contextlib.contextmanager
def locked(directory: Path) -> Iterator[None]:
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / ".lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def write_atomically(path: Path, data: bytes) -> None:
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    partial.write_bytes(data)
    partial.replace(path)


def cached_classpath(path: Path) -> list[str] | None:
    """The cached classpath, or None when it is missing or names a jar that is gone."""
    try:
        entries = [e for e in path.read_text().strip().split(os.pathsep) if e]
    except OSError:
        return None
    if not entries or not all(os.path.isfile(e) for e in entries):
        return None
    return entries


def resolve_classpath(cache: Path, log: Path) -> list[str]:
    """The Neo4j jars, from the cache or resolved by Maven (offline first: a warm local
    repository needs no network)."""
    target = cache / f"classpath-{digest(POM.read_bytes())}.txt"
    entries = cached_classpath(target)
    if entries is not None:
        return entries
    mvn = require_tool("mvn", "install Maven (apt-get install maven) to fetch Neo4j's jars")
    require_tool("java", "install a JDK 17 or newer (apt-get install openjdk-17-jdk-headless)")
    output = cache / f".classpath.{os.getpid()}.txt"
    for offline in (True, False):
        command = [mvn, "-B", "-q", *(["-o"] if offline else []), "-f", str(POM),
                   "dependency:build-classpath", f"-Dmdep.outputFile={output}"]
        with log.open("ab") as sink:
            sink.write(f"\n$ {' '.join(command)}\n".encode())
            sink.flush()
            try:
                code = subprocess.run(command, stdout=sink, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, timeout=MAVEN_TIMEOUT_S,
                                      check=False).returncode
            except subprocess.TimeoutExpired:
                code = -1
        entries = cached_classpath(output)
        if code == 0 and entries is not None:
            output.replace(target)
            return entries
    output.unlink(missing_ok=True)
    raise Neo4jServerError(f"mvn could not resolve the Neo4j jars of {POM} (is Maven Central "
                           f"reachable?); the end of {log}:\n{tail(log)}")


def java_fingerprint(java: str) -> bytes:
    """Identifies the JDK without starting it: an upgraded JDK invalidates the compiled
    launcher's cache entry and its class archive."""
    real = Path(java).resolve()
    stat = real.stat()
    return f"{real}:{stat.st_size}:{stat.st_mtime_ns}".encode()


def build_launcher(classpath: list[str], jar: Path, log: Path) -> None:
    javac = require_tool("javac", "install a JDK, not only a JRE (openjdk-17-jdk-headless)")
    with tempfile.TemporaryDirectory(prefix="anamnesis-neo4j-javac-") as classes:
        command = [javac, "-nowarn", "-d", classes, "-cp", os.pathsep.join(classpath),
                   str(LAUNCHER)]
        result = subprocess.run(command, capture_output=True, text=True, check=False,
                                stdin=subprocess.DEVNULL)
        with log.open("a") as sink:
            sink.write(f"\n$ javac ... {LAUNCHER}\n{result.stdout}{result.stderr}")
        if result.returncode != 0:
            raise Neo4jServerError(f"javac failed on {LAUNCHER}:\n{result.stderr[-4000:]}")
        # A jar rather than a folder: class-data sharing only archives classes from jars.
        partial = jar.with_name(f".{jar.name}.{os.getpid()}")
        with zipfile.ZipFile(partial, "w") as archive:
            for path in sorted(Path(classes).rglob("*.class")):
                archive.write(path, path.relative_to(classes).as_posix())
        partial.replace(jar)


def prune(cache: Path, keep: Path, max_idle_s: float = 86400.0) -> None:
    """Removes other launcher builds (each holds a ~110 MB class archive) left idle by an older
    pom, launcher or JDK."""
    for build in cache.glob("build-*"):
        with contextlib.suppress(OSError):
            if build != keep and time.time() - build.stat().st_mtime > max_idle_s:
                shutil.rmtree(build)


def prepare() -> Runtime:
    """Resolves, compiles and caches everything a start needs; fast once the cache is warm."""
    java = require_tool("java", "install a JDK 17 or newer (apt-get install "
                                "openjdk-17-jdk-headless)")
    cache = cache_root()
    with locked(cache):
        log = cache / "prepare.log"
        classpath = resolve_classpath(cache, log)
        build = cache / ("build-" + digest(POM.read_bytes(), LAUNCHER.read_bytes(),
                                           java_fingerprint(java)))
        build.mkdir(exist_ok=True)
        os.utime(build)  # marks it in use; prune() drops the builds nobody used for a day
        prune(cache, keep=build)
        jar = build / "launcher.jar"
        argfile = build / "classpath.args"
        expected = os.pathsep.join([str(jar), *classpath])
        if not jar.is_file():
            build_launcher(classpath, jar, log)
        if not argfile.is_file() or argfile.read_text() != f'-cp "{expected}"\n':
            write_atomically(argfile, f'-cp "{expected}"\n'.encode())
        return Runtime(java=java, argfile=argfile, class_archive=build / "classes.jsa")


class Neo4jServer:
    """One Neo4j server on a kernel-chosen 127.0.0.1 port, its data and logs under ``home``.

    ``password`` empty starts it with auth disabled (any credentials are then accepted)."""

    def __init__(self, home: Path, *, password: str = DEFAULT_PASSWORD,
                 start_timeout_s: float = 180.0) -> None:
        self.home = Path(home)
        self.password = password
        self.user = DEFAULT_USER
        self.start_timeout_s = start_timeout_s
        self.log = self.home / "launcher.log"
        self.port: int | None = None
        self.version: str | None = None
        self.startup_s: float | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._archive: tuple[Path, Path] | None = None  # (being written, final name)

    @property
    def url(self) -> str:
        if self.port is None:
            raise Neo4jServerError("the server is not running")
        return f"bolt://127.0.0.1:{self.port}"

    @property
    def endpoint(self) -> Neo4jEndpoint:
        return Neo4jEndpoint(self.url, self.user, self.password)

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def start(self) -> Neo4jServer:
        runtime = prepare()
        self.home.mkdir(parents=True, exist_ok=True)
        if runtime.class_archive.is_file():
            sharing = f"-XX:SharedArchiveFile={runtime.class_archive}"
        else:  # the JVM writes it on a clean exit; stop() renames it into place
            partial = runtime.class_archive.with_name(
                f".{runtime.class_archive.name}.{os.getpid()}.{id(self)}")
            self._archive = (partial, runtime.class_archive)
            sharing = f"-XX:ArchiveClassesAtExit={partial}"
        command = [runtime.java, *JVM_OPTIONS, sharing, f"@{runtime.argfile}", "Launcher",
                   str(self.home / "db"), "0", self.password]
        started = time.monotonic()
        with self.log.open("wb") as sink:
            # stdin stays a pipe held by this process: its end stops the server.
            self._process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=sink,
                                             stderr=subprocess.STDOUT, start_new_session=True)
        try:
            self._await_ready(started)
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.monotonic() - started
        return self

    def _await_ready(self, started: float) -> None:
        assert self._process is not None
        deadline = started + self.start_timeout_s
        while True:
            match = READY.search(self.log.read_text(errors="replace"))
            if match:
                self.port, self.version = int(match.group(1)), match.group(2)
                return
            code = self._process.poll()
            if code is not None:
                raise Neo4jServerError(self._failure(f"exited with status {code}"))
            if time.monotonic() > deadline:
                raise Neo4jServerError(self._failure(f"not ready after {self.start_timeout_s}s"))
            time.sleep(0.05)

    def _failure(self, what: str) -> str:
        debug_log = self.home / "db" / "logs" / "debug.log"
        return (f"Neo4j server {what}; the end of {self.log}:\n{tail(self.log)}\n"
                f"the end of {debug_log}:\n{tail(debug_log, 20)}")

    def stop(self, timeout_s: float = 60.0) -> None:
        """Closes stdin (a clean shutdown), then SIGTERM, then SIGKILL for a server that hangs."""
        process, self._process = self._process, None
        self.port = None
        if process is None:
            return
        stdin: IO[bytes] | None = process.stdin
        if stdin is not None:
            with contextlib.suppress(OSError):
                stdin.close()
        for escalate in (None, process.terminate, process.kill):
            if escalate is not None:
                escalate()
            try:
                process.wait(timeout=timeout_s if escalate is None else 15)
                break
            except subprocess.TimeoutExpired:
                continue
        if self._archive is not None:
            partial, final = self._archive
            self._archive = None
            if process.returncode == 0 and partial.is_file():
                partial.replace(final)
            else:
                partial.unlink(missing_ok=True)

    def __enter__(self) -> Neo4jServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()


def main() -> int:
    parser = argparse.ArgumentParser(
        description="Start a throwaway Neo4j test server and serve until Ctrl-C.")
    parser.add_argument("--prefetch", action="store_true",
                        help="only warm the cache: resolve the jars, compile the launcher, "
                             "start and stop a server once (which writes the class archive)")
    args = parser.parse_args()
    # Ctrl-C and SIGTERM both stop the server cleanly (a background job starts with SIGINT
    # ignored, hence both handlers).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    started = time.monotonic()
    runtime = prepare()
    print(f"neo4j: prepared in {time.monotonic() - started:.1f}s ({runtime.argfile.parent})",
          file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="anamnesis-neo4j-") as home, \
            Neo4jServer(Path(home)) as server:
        print(f"neo4j: {server.version} ready at {server.url} (user {server.user}, password "
              f"{server.password}) in {server.startup_s:.1f}s", file=sys.stderr)
        if not args.prefetch:
            with contextlib.suppress(KeyboardInterrupt):
                while True:
                    time.sleep(3600)
    return 0


if __name__ == "__main__":
    sys.exit(main())
