"""Files derived once from the packaged encoder (the ONNX export, the static token table): named by a hash of the
model and the recipe, built on first use into a cache directory under a file lock, so processes that start together
build each file once and a changed model or recipe never reuses an old file."""

from __future__ import annotations

import fcntl
import hashlib
import logging
from pathlib import Path
from typing import Callable

log = logging.getLogger(__name__)


def derived_path(model_dir: str, cache_dir: Path | str, recipe: tuple, suffix: str) -> Path:
    """Where the file derived from ``model_dir`` by ``recipe`` (e.g. a format version and options) is kept."""
    weights = Path(model_dir) / "model.safetensors"
    size = weights.stat().st_size if weights.exists() else 0
    stamp = "|".join(str(x) for x in (Path(model_dir).resolve(), size, *recipe))
    return Path(cache_dir) / f"{Path(model_dir).name}-{hashlib.blake2b(stamp.encode(), digest_size=6).hexdigest()}{suffix}"


def build_once(path: Path, build: Callable[[Path], None], what: str) -> Path:
    """``path``, built now by ``build(path)`` (which must write it atomically) if it is not there yet."""
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be building it right now: wait for it
        if not path.exists():
            log.warning("%s once: %s", what, path)
            build(path)
    return path
