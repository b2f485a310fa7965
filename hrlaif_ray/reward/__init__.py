"""The reward model: scalar head, clipping and normalisation inside forward, the partial-order loss, O(k)
scoring with the shared prompt's key/value cache."""

from hrlaif_ray.reward.loss import partial_order_loss
from hrlaif_ray.reward.model import RewardModel

__all__ = ["RewardModel", "partial_order_loss"]
