"""The label ledger: a folder of committed label shards, and the set of idempotency keys they hold.

A label is committed when its shard is renamed into place (write_records is atomic), so after a crash or a
SIGKILL the folder holds whole shards only; the ledger of a resumed run is read back from them and nothing it
holds is requested again. A key committed twice (two drivers racing) is kept once when reading.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from pathlib import Path

from hrlaif_ray.data.records import LabelRecord
from hrlaif_ray.data.schemas import read_records, write_records

SHARD_GLOB = "labels-*.parquet"


class LabelLedger:
    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.status: dict[str, str] = {}
        for shard in self.shards():
            for label in read_records(shard, "labels"):
                if self.status.get(label.idempotency_key) != "ok":  # an ok label outranks a failed one
                    self.status[label.idempotency_key] = label.status

    def shards(self) -> list[Path]:
        return sorted(self.folder.glob(SHARD_GLOB))

    def is_done(self, key: str, retry_failed: bool = False) -> bool:
        status = self.status.get(key)
        return status == "ok" or (status == "failed" and not retry_failed)

    def commit(self, labels: Iterable[LabelRecord]) -> Path | None:
        """Write the labels not yet committed as one new shard; returns its path (None when nothing is new)."""
        fresh = [l for l in labels if self.status.get(l.idempotency_key) != "ok"]
        if not fresh:
            return None
        name = f"labels-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet"
        path = write_records(self.folder / name, fresh, "labels")
        for label in fresh:
            if self.status.get(label.idempotency_key) != "ok":
                self.status[label.idempotency_key] = label.status
        return path

    def labels(self) -> list[LabelRecord]:
        """Every committed label, one per key (the ok one where a failed label was later retried), in key order: the
        pool commits labels as they finish, in an order that differs from run to run, and what trains on them (the
        RM's and DPO's batches) must not depend on it."""
        best: dict[str, LabelRecord] = {}
        for shard in self.shards():
            for label in read_records(shard, "labels"):
                if label.idempotency_key not in best or best[label.idempotency_key].status != "ok":
                    best[label.idempotency_key] = label
        return [best[key] for key in sorted(best)]
