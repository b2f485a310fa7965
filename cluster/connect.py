"""Joining Ray: the cluster named by the job (or RAY_ADDRESS, as `ray job submit` sets it), else a local one of
our own bound to 127.0.0.1 (never someone else's: `address="local"`)."""

from __future__ import annotations

import os

from actors.runtime import process_defaults, quiet_known_warnings


def connect_ray(address: str | None = None, num_cpus: int | None = None, **kwargs) -> bool:
    """ray.init unless already connected; returns whether this call connected (so the caller shuts it down)."""
    import ray

    if ray.is_initialized():
        return False
    quiet_known_warnings()  # in the driver, which puts and gets tensors too
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, **kwargs)
    else:
        process_defaults()  # a local cluster on 127.0.0.1, zero-copy tensors
        ray.init(address="local", include_dashboard=False, num_cpus=num_cpus, **kwargs)
    return True
