"""Topology: the resource plan (config data) turned into placement groups and per-actor Ray options.

Every role that owns bundles gets one placement group of `replicas` bundles (`plan.bundle` each, e.g.
`{GPU: 1, CPU: 8}` on a GPU cluster, `{CPU: 1}` on a CPU machine). A role colocated with another (actor+reference,
critic+reward, as in OpenRLHF) places its i-th actor in the host's i-th bundle. Each actor asks for `share` of
its bundle, so colocated roles split one bundle and the shares of a bundle never exceed 1 (validated in the
config). Nothing here knows what a role does: it only hands out options.
"""

from __future__ import annotations

from typing import Any

import ray
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from actors.runtime import placed_env
from hrlaif_ray.config import ROLES, ResourcePlan, RoleResources


def actor_resources(bundle: dict[str, float], share: float) -> dict[str, Any]:
    """Ray actor options asking for `share` of `bundle` (CPU, GPU and custom resources alike)."""
    out: dict[str, Any] = {"num_cpus": bundle.get("CPU", 0.0) * share, "num_gpus": bundle.get("GPU", 0.0) * share}
    custom = {k: v * share for k, v in bundle.items() if k not in ("CPU", "GPU", "memory")}
    if custom:
        out["resources"] = custom
    return out


class Topology:
    """The placement groups of one job; `options(role)` gives each of that role's actors its Ray options."""

    def __init__(self, plan: ResourcePlan, roles: tuple[str, ...] = ROLES, timeout_s: float = 120):
        self.plan = plan
        self.roles = {r: getattr(plan, r) for r in roles}
        # A role whose host is not part of this job (no critic in an RLOO run) owns its bundles.
        self.hosts = {n: r.colocate_with if r.colocate_with in self.roles else None for n, r in self.roles.items()}
        self.groups = {}
        for name, role in self.roles.items():
            if self.hosts[name] is None:
                self.groups[name] = placement_group(
                    [plan.bundle_of(name) for _ in range(role.replicas)], strategy=plan.strategy, name=f"hrlaif-{name}"
                )
        refs = {name: g.ready() for name, g in self.groups.items()}
        _, pending = ray.wait(list(refs.values()), num_returns=len(refs), timeout=timeout_s)
        if pending:
            waiting = [name for name, ref in refs.items() if ref in pending]
            asked = ", ".join(f"{name}: {self.roles[name].replicas} x {plan.bundle_of(name)}" for name in waiting)
            free = ray.available_resources()
            self.shutdown()
            raise RuntimeError(
                f"placement groups not ready after {timeout_s:.0f} s for role(s) {', '.join(waiting)}: asked "
                f"for {asked} (strategy {plan.strategy}); the cluster's free resources: {free}"
            )

    def role(self, name: str) -> RoleResources:
        return self.roles[name]

    def options(self, name: str) -> list[dict[str, Any]]:
        role = self.roles[name]
        group = self.groups[self.hosts[name] or name]
        return [
            {
                **actor_resources(self.plan.bundle_of(name), role.share),
                "scheduling_strategy": PlacementGroupSchedulingStrategy(group, placement_group_bundle_index=i),
            }
            for i in range(role.replicas)
        ]

    def learner_options(self, name: str) -> list[dict[str, Any]]:
        """`options(name)` with each actor's runtime environment (its threads, DeepSpeed's accelerator): what a
        learner group or a reward replica is started with."""
        threads = self.role(name).threads
        return [{**o, "runtime_env": placed_env(o, threads)} for o in self.options(name)]

    def shutdown(self) -> None:
        for g in self.groups.values():
            remove_placement_group(g)
        self.groups = {}


def bundles_needed(plan: ResourcePlan, roles: tuple[str, ...] = ROLES) -> dict[str, float]:
    """Total resources the plan reserves (what a cluster definition must provide)."""
    total: dict[str, float] = {}
    for name in roles:
        role = getattr(plan, name)
        if role.colocate_with not in roles:
            for k, v in plan.bundle_of(name).items():
                total[k] = total.get(k, 0.0) + v * role.replicas
    return total
