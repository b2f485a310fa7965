"""Step metrics under stable keys (`reward/*`, `actor/*`, `critic/*`, `time/*`...): one JSON line per step in
`metrics.jsonl`, TensorBoard events beside it (tensorboardX), and the stage's W&B and MLflow runs when configured
(`hrlaif_ray/tracking.py`); and the phase timer."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any


class PeakMemory:
    """The most this process held above what it held when the block began: allocated GPU memory on `cuda`, else
    the host's resident set (its peak reset through /proc/self/clear_refs, Linux; None elsewhere). `bytes` after
    the block."""

    def __init__(self, device: str):
        self.device, self.bytes, self._start = device, None, 0

    @staticmethod
    def _status(key: str) -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
        raise KeyError(key)

    def __enter__(self) -> PeakMemory:
        import torch

        if self.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
            self._start = torch.cuda.memory_allocated()
            return self
        try:
            Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
            self._start = self._status("VmRSS")
        except OSError:
            self._start = None
        return self

    def __exit__(self, *exc) -> None:
        import torch

        if self.device == "cuda":
            self.bytes = torch.cuda.max_memory_allocated() - self._start
        elif self._start is not None:
            self.bytes = max(0, self._status("VmHWM") - self._start)


class PhaseTimer:
    """`with timer("generate"): ...` records `time/generate` in seconds; phases that repeat add up.
    `timer.together(reward=f, reference=g)` runs independent phases at once (threads that wait on remote
    actors); each phase's time runs from their common start to its own end, so overlapping phases add up to
    more than the step."""

    def __init__(self):
        self.times: dict[str, float] = {}

    def _add(self, phase: str, seconds: float) -> None:
        key = f"time/{phase}"
        self.times[key] = self.times.get(key, 0.0) + seconds

    def together(self, **phases: Callable[[], Any]) -> dict[str, Any]:
        """Run the phases at once; returns each one's result by name (the first error is raised after all end)."""
        start = time.perf_counter()

        def run(name: str, fn: Callable[[], Any]) -> Any:
            try:
                return fn()
            finally:
                self._add(name, time.perf_counter() - start)

        with ThreadPoolExecutor(max_workers=len(phases)) as pool:
            futures = {name: pool.submit(run, name, fn) for name, fn in phases.items()}
        return {name: f.result() for name, f in futures.items()}

    @contextmanager
    def __call__(self, phase: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self._add(phase, time.perf_counter() - start)


def read_jsonl(path: Path) -> list[dict]:
    """The rows of a JSONL log this project writes (metrics, faults, alerts); [] when there is none yet."""
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def truncate_jsonl(path: Path, last_step: int) -> int:
    """Drop the rows of a JSONL file of {"step": ...} rows after `last_step`, atomically; how many were dropped."""
    rows = read_jsonl(path)
    keep = [r for r in rows if r["step"] <= last_step]
    if len(keep) < len(rows):
        tmp = path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in keep))
        os.replace(tmp, path)
    return len(rows) - len(keep)


class MetricsLog:
    def __init__(self, folder: str | Path, tensorboard: bool = True, tracker=None):
        """`tracker`: a `hrlaif_ray.tracking.Tracker` that gets every row too (its owner closes it)."""
        self.folder, self.tracker = Path(folder), tracker
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / "metrics.jsonl"
        self.writer = None
        if tensorboard:
            try:
                from tensorboardX import SummaryWriter
            except ImportError:
                SummaryWriter = None
            if SummaryWriter is not None:
                self.writer = SummaryWriter(str(self.folder / "tensorboard"))

    def write(self, step: int, metrics: dict[str, float]) -> None:
        row = {"step": step, **{k: float(v) for k, v in metrics.items()}}
        with open(self.path, "a") as fh:
            fh.write(json.dumps(row) + "\n")
            fh.flush()
        if self.writer is not None:
            for k, v in metrics.items():
                self.writer.add_scalar(k, float(v), step)
            self.writer.flush()
        if self.tracker is not None:
            self.tracker.log(step, metrics)

    def truncate(self, last_step: int) -> int:
        """Drop the rows after `last_step` (a resume redoes those steps from its checkpoint, so each step is logged
        once); returns how many were dropped. Rewritten atomically."""
        if self.tracker is not None:
            self.tracker.restarted()
        return truncate_jsonl(self.path, last_step)

    def rows(self) -> list[dict]:
        return read_jsonl(self.path)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
