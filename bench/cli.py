"""How fast the command line answers a new user: `prefstream --help`, `up`, `status`, and `route` with no stack.

Each command runs as a user would type it (a fresh `prefstream` process), against a private stack on free
ports with its own run directory, so nothing here touches a running `prefstream up`. `up` is timed from the
command's start to its exit (every component healthy, the apps ready), and its own per-component seconds are
kept. Writes bench/results/cli.{json,md}.

    python bench/cli.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import RESULTS, ROOT, clean_env, command_line, machine_facts, write_json  # noqa: E402
from prefstream.procs import free_port, free_port_span  # noqa: E402

PREFSTREAM = str(Path(sys.executable).with_name("prefstream"))


def timed(args: list[str], env: dict, timeout: float = 300) -> tuple[float, subprocess.CompletedProcess]:
    t = time.perf_counter()
    p = subprocess.run([PREFSTREAM, *args], env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    return time.perf_counter() - t, p


def median(xs: list[float]) -> float:
    return round(sorted(xs)[len(xs) // 2], 3)


def measure(repeat: int) -> dict:
    from stack.services import RAY_PORT_SPAN

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    help_s = [timed(["--help"], env)[0] for _ in range(repeat)]
    no_stack = ["--broker-port", str(free_port()), "--run-dir", tempfile.mkdtemp(prefix="prefstream-cli-none-")]
    route = [timed(["route", "bob", "hello", *no_stack], env) for _ in range(repeat)]
    assert all(p.returncode == 1 and "no Kafka broker" in p.stderr for _, p in route), route[0][1].stderr
    up_s, up_parts, status_s = [], [], []
    for i in range(repeat):
        run_dir = Path(tempfile.mkdtemp(prefix="prefstream-cli-"))
        ports = ["--run-dir", str(run_dir), "--broker-port", str(free_port()), "--graph-port", str(free_port()),
                 "--ray-port", str(free_port_span(RAY_PORT_SPAN))]
        env_i = {**env, "PREFSTREAM_MODEL_DIR": str(run_dir / "models")}
        try:
            dt, p = timed(["up", *ports], env_i)
            if p.returncode != 0:
                raise RuntimeError(f"up failed: {p.stderr[-2000:]}")
            up_s.append(dt)
            up_parts.append(json.loads((run_dir / "stack.json").read_text())["start_s"])
            print(f"up {dt:.2f} s: {up_parts[-1]}", flush=True)
            status_s.append(timed(["status", "--run-dir", str(run_dir)], env_i)[0])
        finally:
            timed(["down", "--run-dir", str(run_dir)], env_i)
    return {"help_s": median(help_s), "up_s": median(up_s), "status_s": median(status_s),
            "route_no_stack_s": median([dt for dt, _ in route]),
            "runs": {"help_s": help_s, "up_s": up_s, "up_components_s": up_parts, "status_s": status_s,
                     "route_no_stack_s": [dt for dt, _ in route]}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3, help="runs of each command (the median is reported)")
    args = ap.parse_args()
    clean_env()
    load0 = os.getloadavg()
    res = {"command": command_line(), "machine": machine_facts(), **measure(args.repeat),
           "load_before": list(load0), "load_after": list(os.getloadavg())}
    write_json(RESULTS / "cli.json", res)
    comp = res["runs"]["up_components_s"][0] if res["runs"]["up_components_s"] else {}
    md = ["# The command line's speed for a new user\n", f"Command: `{res['command']}`\n",
          f"Median of {args.repeat} fresh processes each; load average {load0[0]:.2f} before, "
          f"{res['load_after'][0]:.2f} after (2 cores).\n",
          "| command | seconds | target |", "|---|---|---|",
          f"| `prefstream --help` | {res['help_s']} | ≤ 1 |", f"| `prefstream status` (stack up) | {res['status_s']} | ≤ 1 |",
          f"| `prefstream up` (every app ready) | {res['up_s']} | ≤ 10 |",
          f"| `prefstream route` with no broker (one-line error, exit 1) | {res['route_no_stack_s']} | ~3 |", "",
          "`up`, first run, seconds from the start of `up` until each component was ready: "
          + ", ".join(f"{k} {v:.2f}" for k, v in comp.items())]
    (RESULTS / "cli.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
