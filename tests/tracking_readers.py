"""Reading back what a stage logged to MLflow (its client on the local store) and to W&B offline (the run's
`.wandb` file: W&B's 7-byte header, then LevelDB-log records of `wandb_internal_pb2.Record`, which `wandb sync`
uploads; the library has no public reader of it)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

BLOCK = 32768
HEADER = 7  # a record's checksum (4), length (2), type (1): FULL 1, FIRST 2, MIDDLE 3, LAST 4


def wandb_records(path: Path) -> list:
    """The protobuf records of an offline W&B run file, in order."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path}: not a W&B run file"
    pos, chunks, records = 7, b"", []
    while pos + HEADER <= len(data):
        room = BLOCK - pos % BLOCK
        if room < HEADER:  # the block's tail is padding
            pos += room
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        if kind == 0 and length == 0:
            pos += room
            continue
        chunks += data[pos + HEADER : pos + HEADER + length]
        pos += HEADER + length
        if kind in (1, 4):  # a whole record, or the last chunk of one
            record = pb.Record()
            record.ParseFromString(chunks)
            records.append(record)
            chunks = b""
    return records


def wandb_ids(folder: Path) -> list[str]:
    """The ids of the offline W&B runs under `folder`, oldest first."""
    ids = [p.stem[4:] for p in sorted(folder.glob("wandb/offline-run-*/run-*.wandb"))]
    return list(dict.fromkeys(ids))


def wandb_run(folder: Path, run_id: str | None = None) -> dict:
    """What the offline W&B run under `folder` holds (the one, or `run_id`; a resumed run writes a folder a
    session, which `wandb sync` merges by id): {"id", "name", "group", "job_type", "config", "history": [{step,
    metric: value}], "summary", "artifacts": [file paths], "exit_code"}."""
    if run_id is None:
        (run_id,) = wandb_ids(folder)
    run = {"id": run_id, "history": [], "config": {}, "summary": {}, "artifacts": [], "exit_code": None}
    records = [r for p in sorted(folder.glob(f"wandb/offline-run-*/run-{run_id}.wandb")) for r in wandb_records(p)]
    for record in records:
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run.update(name=record.run.display_name, group=record.run.run_group, job_type=record.run.job_type)
            run["config"].update({i.key: json.loads(i.value_json) for i in record.run.config.update})
        elif kind == "config":
            run["config"].update({i.key: json.loads(i.value_json) for i in record.config.update})
        elif kind == "history":
            row = {"/".join(i.nested_key) or i.key: json.loads(i.value_json) for i in record.history.item}
            run["history"].append(row)
        elif kind == "summary":
            run["summary"].update(
                {"/".join(i.nested_key) or i.key: json.loads(i.value_json) for i in record.summary.update}
            )
        elif kind == "artifact":
            run["artifacts"] += [c.path for c in record.artifact.manifest.contents]
        elif kind == "exit":
            run["exit_code"] = record.exit.exit_code
    return run


def mlflow_run(uri: str, experiment: str, name: str) -> dict:
    """The MLflow run of that name: {"tags", "params", "status", "metrics": {key: [(step, value)]}, "artifacts"}."""
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    (run,) = client.search_runs([exp.experiment_id], filter_string=f"attributes.run_name = '{name}'")
    rid = run.info.run_id
    metrics = {k: [(m.step, m.value) for m in client.get_metric_history(rid, k)] for k in run.data.metrics}

    def files(path=None) -> list[str]:
        out = []
        for a in client.list_artifacts(rid, path):
            out += files(a.path) if a.is_dir else [a.path]
        return out

    return {
        "tags": run.data.tags,
        "params": run.data.params,
        "status": run.info.status,
        "metrics": metrics,
        "artifacts": files(),
    }
