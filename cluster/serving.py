"""What `hrlaif serve-rm` and `hrlaif serve-reward` share: join the cluster named by RAY_ADDRESS (else start a
local one), start Serve's HTTP proxy on `host:port`, run the application, print `READY <url>`, and on SIGTERM or
Ctrl-C take it down: the whole local Ray when this command started it, else only the application."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from typing import Any

from hrlaif_ray.zero import free_port


def serve_until_stopped(name: str, host: str, port: int, app: Callable[[], Any]) -> None:
    """Serve `app()` (built once Ray is up) as application `name` at `/` until a signal; `port` 0: a free one."""
    import ray
    from ray import serve

    from cluster.connect import connect_ray

    own_cluster = not os.environ.get("RAY_ADDRESS")  # else we joined someone's cluster: leave it as it was
    connect_ray(log_to_driver=False, configure_logging=False)
    stop = threading.Event()  # after Ray's start, whose own SIGTERM handler would dump a stack trace first
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    port = port or free_port()
    serve.start(http_options={"host": host, "port": port}, proxy_location="HeadOnly")
    try:
        serve.run(app(), name=name, route_prefix="/")
        print(f"READY http://{host}:{port}", flush=True)
        stop.wait()
    finally:
        if own_cluster:  # the local Ray this command started goes, Serve and its actors with it
            ray.shutdown()
        else:  # someone else's cluster: only our application goes
            serve.delete(name)
