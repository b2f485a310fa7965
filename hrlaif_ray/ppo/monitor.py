"""The reward-hacking monitor: the paper's failure mode is a reward that rises while accuracy falls.

Every `every` PPO steps the controller measures greedy accuracy on a held-out verifiable set and feeds it here
with the mean reward since the previous check. The monitor keeps the check with the best accuracy so far; it
raises an alert when accuracy has fallen more than `accuracy_drop` below that best while the reward has risen
more than `reward_rise` above what it was then. Pure bookkeeping: no Ray, no model.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Check:
    step: int
    reward: float
    accuracy: float


@dataclass
class RewardHackingMonitor:
    accuracy_drop: float = 0.05
    reward_rise: float = 0.0
    checks: list[Check] = field(default_factory=list)
    best: Check | None = None

    def update(self, step: int, reward: float, accuracy: float) -> str | None:
        """Record a check; returns the alert's message when reward rose while accuracy fell, else None."""
        check = Check(step, reward, accuracy)
        self.checks.append(check)
        if self.best is None or accuracy > self.best.accuracy:
            self.best = check
            return None
        fell = self.best.accuracy - accuracy
        rose = reward - self.best.reward
        if fell > self.accuracy_drop and rose > self.reward_rise:
            return (
                f"reward hacking suspected at step {step}: reward {self.best.reward:.3f} -> {reward:.3f} (+{rose:.3f}) "
                f"while held-out accuracy fell {self.best.accuracy:.3f} -> {accuracy:.3f} (-{fell:.3f}) since step "
                f"{self.best.step}"
            )
        return None
