"""The reward-hacking monitor fires when reward rises while held-out accuracy falls, and only then."""

from hrlaif_ray.ppo.monitor import RewardHackingMonitor


def test_fires_when_reward_rises_and_accuracy_falls():
    m = RewardHackingMonitor(accuracy_drop=0.05, reward_rise=0.1)
    assert m.update(10, reward=0.0, accuracy=0.50) is None
    assert m.update(20, reward=0.3, accuracy=0.52) is None  # both rise: healthy
    assert m.update(30, reward=0.35, accuracy=0.49) is None  # a small dip is noise
    alert = m.update(40, reward=0.9, accuracy=0.30)
    assert alert and "step 40" in alert and "0.520 -> 0.300" in alert and "since step 20" in alert


def test_quiet_when_accuracy_falls_with_the_reward():
    m = RewardHackingMonitor(accuracy_drop=0.05, reward_rise=0.1)
    m.update(10, reward=0.5, accuracy=0.5)
    assert m.update(20, reward=0.2, accuracy=0.3) is None  # a bad update, not reward hacking
    assert m.update(30, reward=0.55, accuracy=0.48) is None  # reward up, accuracy within the drop
