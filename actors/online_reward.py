"""The online hybrid reward, a reward of `hrlaif_ray.reward.interface`: each prompt's group of samples labeled by
the labeler pool (the strategies of `hrlaif label`) during the PPO step, committed to a ledger, and the group's
partial order turned into rewards (`hrlaif_ray/reward/group.py`); a failed label gives its group no signal."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from actors.labeler import ItemFeed, LabelerPool, PoolStats
from hrlaif_ray.config import LabelingConfig, PoolConfig
from hrlaif_ray.data.records import PromptRecord, Response
from hrlaif_ray.labeling.constitution import file_template_version
from hrlaif_ray.labeling.ledger import LabelLedger
from hrlaif_ray.labeling.review import HumanLedger, apply_overrides
from hrlaif_ray.labeling.strategies import LabelItem, idempotency_key
from hrlaif_ray.reward.group import group_rewards
from hrlaif_ray.reward.interface import Completions, Scores


class OnlineReward:
    """The online hybrid reward: the labeler pool labels each group during the step; its ledger keeps every label
    (a rerun of the same group asks nothing), its judge cache every answer."""

    def __init__(self, labeling: LabelingConfig, pool: PoolConfig, folder: str | Path):
        labeling = labeling.with_own_cache(folder)
        self.labeling, self.ledger, self.folder = labeling, LabelLedger(folder), Path(folder)
        self.template = file_template_version(labeling.constitution)
        self.pool = LabelerPool(labeling, pool)

    def score(self, batch: Completions) -> Scores:
        """One reward per sample, each prompt's group (`batch.group_size` samples) labeled together, and what
        labeling them did and cost."""
        return _scores(*self.rewards(batch.groups()))

    def rewards(self, groups: list[tuple[PromptRecord, list[str]]]) -> tuple[list[list[float]], dict]:
        """One reward per sample of each (prompt, sample texts) group, and what labeling them did and cost."""
        items = [self.item(prompt, texts) for prompt, texts in groups]
        keys = [idempotency_key(item, self.labeling, self.template) for item in items]
        pending = list({k: i for k, i in zip(keys, items) if not self.ledger.is_done(k)}.items())
        stats = self.pool.run([i for _, i in pending], self.ledger, keep=True)
        return self.found(keys, items, stats)

    def item(self, prompt: PromptRecord, texts: list[str]) -> LabelItem:
        return LabelItem(prompt, [Response(t) for t in texts])

    def stream(self, groups: int, group_size: int) -> OnlineStream:
        """The batch's groups labeled as they arrive (see `OnlineStream`)."""
        return OnlineStream(self, groups)

    def found(self, keys: list[str], items: list[LabelItem], stats: PoolStats) -> tuple[list[list[float]], dict]:
        """Each group's rewards from its label (made now, or read back from the ledger), and the labeling's info."""
        found = {label.idempotency_key: label for label in stats.labels}
        if any(k not in found for k in keys):  # labeled before (a rerun): read them back
            found.update({l.idempotency_key: l for l in self.ledger.labels() if l.idempotency_key in set(keys)})
        overrides = self.overrides(found, keys)
        rewards = [group_rewards(found.get(k), len(item.responses)) for k, item in zip(keys, items)]
        info = {
            "online/human_overrides": overrides,
            "online/labels": stats.labeled,
            "online/labels_failed": sum(found.get(k) is None or found[k].status != "ok" for k in keys),
            "online/judge_cost_usd": stats.cost_usd,
            "online/label_seconds": stats.seconds,
        }
        return rewards, info

    def overrides(self, found: dict, keys: list[str]) -> int:
        """Put the people's decisions (`hrlaif review` on this ledger, read afresh each batch, so decisions made
        during the run count from the next batch) in place of the AI's pairs in `found`'s labels of `keys`; returns
        how many pairs they decided."""
        if not self.labeling.human_overrides:
            return 0
        decisions = HumanLedger(self.folder).decisions
        labels = [found[k] for k in dict.fromkeys(keys) if k in found]
        if not decisions or not labels:
            return 0
        reviewed, counts = apply_overrides(labels, decisions)
        found.update({l.idempotency_key: l for l in reviewed})
        return counts["decided"]

    def shutdown(self) -> None:
        self.pool.shutdown()


class OnlineStream:
    """One batch's groups labeled as they arrive: the labeler pool runs in a thread of its own on an `ItemFeed`, so
    the judge answers while the engines are still sampling; `result()` waits for the last label. A group labeled
    before (a rerun) or twice in one batch is asked once."""

    def __init__(self, reward: OnlineReward, groups: int):
        self.reward = reward
        self.keys: list[str | None] = [None] * groups
        self.items: list[LabelItem | None] = [None] * groups
        self.fed: set[str] = set()
        self.feed = ItemFeed()
        self.labeling = ThreadPoolExecutor(max_workers=1, thread_name_prefix="online-labels")
        self.running = self.labeling.submit(reward.pool.run, self.feed, reward.ledger, keep=True)

    def add(self, index: int, group: Completions) -> None:
        (prompt, texts), *rest = group.groups()
        if rest:
            raise ValueError(f"group {index}: one prompt's completions expected, got {len(rest) + 1} groups")
        item = self.reward.item(prompt, texts)
        key = idempotency_key(item, self.reward.labeling, self.reward.template)
        self.keys[index], self.items[index] = key, item
        if key not in self.fed and not self.reward.ledger.is_done(key):
            self.fed.add(key)
            self.feed.put(item)

    def result(self) -> Scores:
        self.feed.close()
        try:
            stats = self.running.result()
        finally:
            self.labeling.shutdown(wait=False)
        missing = [i for i, k in enumerate(self.keys) if k is None]
        if missing:
            raise ValueError(f"groups {missing[:5]} were never added")
        return _scores(*self.reward.found(self.keys, self.items, stats))


def _scores(rewards: list[list[float]], info: dict) -> Scores:
    """Each group's rewards as one flat score per sample, in group order."""
    return Scores(torch.tensor([r for group in rewards for r in group], dtype=torch.float32), info)
