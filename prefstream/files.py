"""Files that several processes read and write: whole-file replacement, and a lock for check-then-write.

Routers poll the model registry's small files (``CURRENT``, ``count.json``, the level offsets) while the periodic
trainer and its Ray cycle tasks write them. :func:`write_atomic` replaces a file in one rename, so a reader sees the
old or the new text, never half. A writer that first reads the file to decide (write only when the file holds
older feedback, demote only while a version serves) also needs :func:`locked`: without it, another writer can land
between the read and the rename and be overwritten by a decision taken on what it replaced.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOCK_FILE = ".lock"


def write_atomic(path: Path | str, text: str) -> None:
    """Replace ``path``'s content with ``text`` (temp file beside it + rename; the folder is created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")  # one per writing thread
    tmp.write_text(text)
    os.replace(tmp, path)


@contextmanager
def locked(folder: Path | str) -> Iterator[None]:
    """Hold ``folder``'s exclusive lock (an advisory lock on ``folder/.lock``) for the block: every process and
    thread that takes it around its read-decide-write runs those steps one at a time. On a folder shared by
    several machines it holds where the file system carries flock (Linux NFS clients map it to NFS byte-range
    locks); elsewhere it holds per machine only."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / LOCK_FILE, "a") as fh:  # a descriptor of its own: flock excludes threads of one process too
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
