"""Connecting to Ray the way prefstream needs it: loopback-only and without auth on a local stack."""

from __future__ import annotations

import os

# Must be set before `import ray`: keeps a local cluster on 127.0.0.1 (see ../shared/design/infra.md).
LOCAL_RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled",
                 "RAY_USAGE_STATS_ENABLED": "0"}


def init_ray(address: str = "local", **kwargs):
    """``ray.init`` on ``address`` ("local" starts an in-process local cluster); idempotent."""
    for k, v in LOCAL_RAY_ENV.items():
        os.environ.setdefault(k, v)
    import ray

    if ray.is_initialized():
        return ray
    ray.init(address=address, include_dashboard=False, log_to_driver=False,
             ignore_reinit_error=True, **kwargs)
    return ray
