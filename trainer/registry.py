"""A directory of versioned checkpoints with an atomically written ``CURRENT`` pointer.

    root/
      v0001-20260123T101500/model.pt    one checkpoint per version
      CURRENT                           the version workers serve (written via temp file + rename), or
                                        "count": the count-based scorer serves (trainer/count_scorer.py)
      count.json                        the count-based scorer's global win rates (each trainer cycle)

Workers poll :meth:`ModelRegistry.current` and hot-swap when it changes. A registry with no promoted
version serves the count-based scorer: a published candidate serves only once promoted by evidence.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

from prefstream.files import locked, write_atomic
from trainer.checkpoint import save_checkpoint

_VERSION_RE = re.compile(r"^v(\d{4,})-[0-9TZ]+$")
MODEL_FILE = "model.pt"


class ModelRegistry:
    def __init__(self, root_dir: Path | str):
        self.root = Path(root_dir)

    def list(self) -> list[str]:
        """Published versions, oldest first."""
        if not self.root.is_dir():
            return []
        vs = [p.name for p in self.root.iterdir() if _VERSION_RE.match(p.name) and (p / MODEL_FILE).exists()]
        return sorted(vs, key=lambda v: int(_VERSION_RE.match(v).group(1)))

    def latest(self) -> str | None:
        vs = self.list()
        return vs[-1] if vs else None

    def path(self, version: str) -> Path:
        if not _VERSION_RE.match(version):
            raise ValueError(f"{version!r} is not a registry version")
        return self.root / version / MODEL_FILE

    def _next_version(self) -> str:
        last = self.latest()
        n = int(_VERSION_RE.match(last).group(1)) + 1 if last else 1
        return f"v{n:04d}-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}"

    def publish(self, checkpoint, *, promote: bool = False, **save_kwargs) -> str:
        """Add a checkpoint file, or a model (``save_kwargs`` as for save_checkpoint, minus version)."""
        self.root.mkdir(parents=True, exist_ok=True)
        version = self._next_version()
        while (self.root / version).exists():  # two publishes in the same second
            time.sleep(0.01)
            version = self._next_version()
        tmpdir = self.root / f".{version}.tmp"
        tmpdir.mkdir(parents=True)
        if isinstance(checkpoint, (str, Path)):
            shutil.copyfile(checkpoint, tmpdir / MODEL_FILE)
        else:
            save_checkpoint(checkpoint, tmpdir / MODEL_FILE, version=version, **save_kwargs)
        os.replace(tmpdir, self.root / version)
        if promote:
            self.promote(version)
        return version

    def promote(self, version: str) -> None:
        """Point CURRENT at ``version`` (temp file + rename: readers see the old or the new, never half)."""
        if not self.path(version).exists():
            raise FileNotFoundError(f"no checkpoint for version {version} under {self.root}")
        with locked(self.root):  # after a demotion's check, or before it: never between
            write_atomic(self.root / "CURRENT", version + "\n")

    def demote(self, version: str | None = None) -> bool:
        """Point CURRENT at the count-based scorer; with ``version``, only while that version is CURRENT (checked
        under the registry's lock: a promotion between a verdict on ``version`` and this call is kept). Returns
        whether it did."""
        with locked(self.root):  # no promotion lands between the check and the write
            if version is not None and self.current() != version:
                return False
            write_atomic(self.root / "CURRENT", "count\n")
        return True

    def current(self) -> str | None:
        """The promoted model version; None when the count-based scorer serves (nothing promoted yet, or
        the last promoted model was demoted)."""
        try:
            v = (self.root / "CURRENT").read_text().strip()
            if v and self.path(v).exists():
                return v
        except (FileNotFoundError, ValueError):
            pass
        return None
