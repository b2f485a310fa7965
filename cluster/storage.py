"""The one storage assumption of a run, checked at its start: the driver (which reads checkpoints, resumes, writes
metrics) and the actor's rank 0 (which writes checkpoints and the final policy) see the same output folder. On one
machine they always do; on a cluster only when output_dir is storage every node mounts at the same path (an NFS or
ReadWriteMany volume: cluster/configs/raycluster-8xa100.yaml mounts /checkpoints on every pod). Without it a run
would train for hours and then fail to resume, or leave its checkpoints on a worker's local disk."""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Callable
from pathlib import Path

from hrlaif_ray.errors import HrlaifError


def check_shared_folder(folder: str | Path, read_probe: Callable[[str], dict], who: str = "the actor's rank 0") -> None:
    """Write a probe file in `folder` and have `read_probe(path)` (the writer of checkpoints, on its own node) read
    it back; one error naming both sides' paths and nodes when it does not find what was written."""
    folder = Path(folder).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(8)
    probe = folder / f".hrlaif-probe-{os.getpid()}-{token}"
    probe.write_text(token)
    try:
        seen = read_probe(str(probe))
    finally:
        probe.unlink(missing_ok=True)
    if seen.get("text") != token:
        found = "no such file" if seen.get("text") is None else "another file's text"
        raise HrlaifError(
            f"output_dir: the driver wrote {probe} on {socket.gethostname()}, but {who} on {seen.get('node')} finds "
            f"{found} at {seen.get('path')}: put output_dir on storage every node mounts at the same path"
        )
