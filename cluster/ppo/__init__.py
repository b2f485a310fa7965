"""PPO on Ray, the single controller: `hrlaif ppo --config job.yaml`, or under a Ray cluster
`ray job submit --address http://127.0.0.1:8265 --working-dir . -- python -m cluster.ppo --config job.yaml`.

By concern:
- `roles.py`: the rollout engines (vLLM), the actor / reference / critic learners (DeepSpeed) and the reward,
  in their placement groups, behind typed handles;
- `experience.py`: prompts, samples, rewards, dynamic sampling, and the experience sources (synchronous, one
  step ahead) behind one interface;
- `loop.py`: `ppo_loop`, the algorithm in one place, one call per phase;
- `run.py`: a run, its checkpoints, resume and the restarts after faults; the command's `main`;
- `faults.py`: the fault log and the fault injection that wraps the experience source.

Where it departs from the paper: PPO is the paper's; critic-free RLOO/GRPO are options (`algo.estimator`), and
the reward may add the verifier's verdict to the RM (`reward.kind: rm+verifier`) or be the online hybrid judge's
labels of each step's samples (`online`, `online+rm`), hybrid rewards beyond the paper.
"""

from cluster.ppo.run import main, run_ppo

__all__ = ["main", "run_ppo"]
