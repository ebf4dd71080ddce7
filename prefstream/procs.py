"""Starting, health-checking and stopping the local stack's processes.

Each process runs in its own session (process group) so that ``stop`` can end it together with its
children, and its pid and start command are recorded so we only ever stop what we started.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_port_span(span: int, low: int = 20000, high: int = 32700, tries: int = 200) -> int:
    """A base port such that base .. base+span-1 are all free right now (for a Ray head's ports).

    Below Linux's ephemeral range (32768+), so outgoing connections do not take them meanwhile."""
    import random

    rng = random.Random()
    for _ in range(tries):
        base = rng.randrange(low, high - span)
        if not any(port_open(p, timeout=0.02) for p in range(base, base + span)):
            return base
    raise RuntimeError(f"no run of {span} free ports found between {low} and {high}")


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_until(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> float:
    """Poll ``check`` until true; return the seconds it took, or raise TimeoutError naming ``what``."""
    t0 = time.monotonic()
    while True:
        try:
            if check():
                return time.monotonic() - t0
        except ProcessExited:
            raise
        except Exception:  # a health probe may fail while the service starts
            pass
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"{what} not healthy after {timeout:.0f} s")
        time.sleep(interval)


def wait_healthy(proc: "Proc", check: Callable[[], bool], timeout: float, what: str) -> float:
    """Like wait_until, but fail at once, with the log tail, if the process exits meanwhile."""

    def probe() -> bool:
        if not alive(proc.pid):
            tail = Path(proc.log).read_text(errors="replace")[-3000:] if Path(proc.log).exists() else ""
            raise ProcessExited(f"{what} exited during start-up; last log lines:\n{tail}")
        return check()

    return wait_until(probe, timeout, what, interval=0.1)


class ProcessExited(RuntimeError):
    pass


@dataclass
class Proc:
    """A started process as recorded in the run directory."""

    name: str
    pid: int
    port: int | None
    cmd: list[str]
    log: str
    started_at: float = field(default_factory=time.time)
    start_ticks: int | None = None  # kernel start time of the pid, to tell it from a reused pid

    def to_dict(self) -> dict:
        return asdict(self)


def spawn(name: str, cmd: list[str], log_dir: Path, port: int | None = None,
          env: dict[str, str] | None = None, cwd: Path | None = None) -> Proc:
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"{name}.log"
    with open(log, "ab") as fh:
        p = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             start_new_session=True, env={**os.environ, **(env or {})}, cwd=cwd)
    return Proc(name=name, pid=p.pid, port=port, cmd=cmd, log=str(log), start_ticks=start_ticks(p.pid))


def start_ticks(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return int(fh.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is dead for our purposes
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] != "Z"
    except OSError:
        return True


def same_process(proc: Proc) -> bool:
    """True if ``proc.pid`` is still the process we started (pids get reused)."""
    ticks = start_ticks(proc.pid)
    return ticks is not None and ticks == proc.start_ticks


def group_pids(pgid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if os.getpgid(int(d.name)) == pgid:
                    out.append(int(d.name))
            except OSError:
                pass
    return out


def stop(proc: Proc, timeout: float = 5.0) -> None:
    """SIGTERM the process group we started, then SIGKILL whatever is left."""
    if not alive(proc.pid) or not same_process(proc):
        # the leader may be gone while children of its group live on
        if not group_pids(proc.pid):
            return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.waitpid(proc.pid, os.WNOHANG)
            except ChildProcessError:
                pass
            if not group_pids(proc.pid):
                return
            time.sleep(0.05)
