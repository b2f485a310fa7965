"""The online hybrid reward, a reward of `hrlaif_ray.reward.interface`: each prompt's group of samples labeled by
the labeler pool (the strategies of `hrlaif label`) during the PPO step, committed to a ledger, and the group's
partial order turned into rewards (`hrlaif_ray/reward/group.py`); a failed label gives its group no signal."""

from __future__ import annotations

from pathlib import Path

import torch

from actors.labeler import LabelerPool
from hrlaif_ray.config import LabelingConfig, PoolConfig
from hrlaif_ray.data.records import PromptRecord, Response
from hrlaif_ray.labeling.constitution import file_template_version
from hrlaif_ray.labeling.ledger import LabelLedger
from hrlaif_ray.labeling.strategies import LabelItem, idempotency_key
from hrlaif_ray.reward.group import group_rewards
from hrlaif_ray.reward.interface import Completions, Scores


class OnlineReward:
    """The online hybrid reward: the labeler pool labels each group during the step; its ledger keeps every label
    (a rerun of the same group asks nothing), its judge cache every answer."""

    def __init__(self, labeling: LabelingConfig, pool: PoolConfig, folder: str | Path):
        labeling = labeling.with_own_cache(folder)
        self.labeling, self.ledger = labeling, LabelLedger(folder)
        self.template = file_template_version(labeling.constitution)
        self.pool = LabelerPool(labeling, pool)

    def score(self, batch: Completions) -> Scores:
        """One reward per sample, each prompt's group (`batch.group_size` samples) labeled together, and what
        labeling them did and cost."""
        rewards, info = self.rewards(batch.groups())
        return Scores(torch.tensor([r for group in rewards for r in group], dtype=torch.float32), info)

    def rewards(self, groups: list[tuple[PromptRecord, list[str]]]) -> tuple[list[list[float]], dict]:
        """One reward per sample of each (prompt, sample texts) group, and what labeling them did and cost."""
        items = [LabelItem(prompt, [Response(t) for t in texts]) for prompt, texts in groups]
        keys = [idempotency_key(item, self.labeling, self.template) for item in items]
        pending = list({k: i for k, i in zip(keys, items) if not self.ledger.is_done(k)}.items())
        stats = self.pool.run([i for _, i in pending], self.ledger, keep=True)
        found = {label.idempotency_key: label for label in stats.labels}
        if any(k not in found for k in keys):  # labeled before (a rerun): read them back
            found.update({l.idempotency_key: l for l in self.ledger.labels() if l.idempotency_key in set(keys)})
        rewards = [group_rewards(found.get(k), len(item.responses)) for k, item in zip(keys, items)]
        info = {
            "online/labels": stats.labeled,
            "online/labels_failed": sum(found.get(k) is None or found[k].status != "ok" for k in keys),
            "online/judge_cost_usd": stats.cost_usd,
            "online/label_seconds": stats.seconds,
        }
        return rewards, info

    def shutdown(self) -> None:
        self.pool.shutdown()
