"""The resource plan: where every role's Ray actors go, as data (cluster/topology.py turns it into placement
groups)."""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import Field, model_validator

from hrlaif_ray.config.base import Section, variant

Role = Literal["actor", "critic", "reference", "reward", "rollout"]
ROLES: tuple[str, ...] = get_args(Role)  # every role a plan places, in one place


class RoleResources(Section):
    """One role's Ray actors: how many, what share of a bundle each takes, and whom it shares bundles with."""

    replicas: int = Field(1, ge=1, description="Actors of this role (learner ranks, vLLM engines, RM replicas).")
    share: float = Field(
        1.0, gt=0, le=1, description="Share of one bundle each actor takes (colocated roles split one)."
    )
    colocate_with: str | None = Field(
        None,
        description="Place this role's actors in that role's bundles (OpenRLHF's "
        "colocation: actor+reference, critic+reward); replicas must not exceed the host's.",
    )
    threads: int = Field(1, ge=1, description="torch/OMP threads of each actor (Ray sets 1 unless told).")
    bundle: dict[str, float] | None = Field(
        None,
        description="This role's own bundle, in place of the plan's (None: the plan's); a custom resource that names "
        "a node or node type (`{CPU: 1, rollout_node: 1}`) places the role there. Colocated roles use their host's.",
    )


TwoRanks = variant(RoleResources, "TwoRanks", "Two actors (PPO's actor: two DeepSpeed ranks).", replicas=2)
TwoThreads = variant(
    RoleResources, "TwoThreads", "One actor of two threads (a sampling engine, the DPO policy).", threads=2
)


class ResourcePlan(Section):
    """The placement of every role, as data: on a GPU cluster `bundle: {GPU: 1, CPU: 8}`; on a CPU machine CPU
    bundles (or a custom resource standing for GPUs), so the same plan runs on one machine."""

    bundle: dict[str, float] = Field(default_factory=lambda: {"CPU": 1.0}, description="Resources of one bundle.")
    strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = Field(
        "PACK", description="Placement-group strategy."
    )
    actor: TwoRanks = Field(
        default_factory=TwoRanks,
        description="The actor learner's ranks (replicas), their threads and share of a bundle.",
    )
    critic: RoleResources = Field(default_factory=RoleResources, description="The critic learner's ranks (GAE only).")
    reference: RoleResources = Field(
        default_factory=RoleResources, description="The reference policy's replicas (log-probs for the KL)."
    )
    reward: RoleResources = Field(
        default_factory=RoleResources, description="The reward service's replicas (RM and/or verifier)."
    )
    rollout: RoleResources = Field(default_factory=RoleResources, description="The rollout engines (vLLM).")
    gpu_memory_gib: float | None = Field(
        None,
        gt=0,
        description="Memory of one GPU of the cluster (40 for an A100-40G): the planner (`hrlaif plan`) checks "
        "every GPU bundle's roles against it before anything is reserved. None: a plan with GPU bundles is "
        "refused (it cannot be checked); unused without GPUs.",
    )
    host_memory_gib: float | None = Field(
        None,
        gt=0,
        description="Host memory the run may use, over all its nodes: the planner checks what lives there (offloaded "
        "states, and every role of a plan without GPUs) against it. None: this machine's memory for a plan without "
        "GPUs; a plan with GPUs is refused (it cannot be checked).",
    )

    @model_validator(mode="after")
    def _colocation(self) -> ResourcePlan:
        roles = {name: getattr(self, name) for name in ROLES}
        load: dict[str, float] = {}
        for name, role in roles.items():
            host = role.colocate_with
            if host is None:
                load[name] = load.get(name, 0.0) + role.share
                continue
            if host not in roles or roles[host].colocate_with is not None:
                raise ValueError(f"{name}.colocate_with: {host!r} is not a role that owns bundles")
            if role.bundle is not None:
                raise ValueError(f"{name}.bundle: a role colocated with {host} uses {host}'s bundles")
            if role.replicas > roles[host].replicas:
                raise ValueError(
                    f"{name}.replicas ({role.replicas}) exceeds {host}.replicas ({roles[host].replicas}) it is colocated with"
                )
            load[host] = load.get(host, 0.0) + role.share
        for name, total in load.items():
            if total > 1 + 1e-9:
                raise ValueError(f"{name}: colocated shares sum to {total:g} of a bundle (at most 1)")
        return self

    def bundle_of(self, role: str) -> dict[str, float]:
        """The bundle a role's actors are placed in: its own, else its host's, else the plan's."""
        r = getattr(self, role)
        host = getattr(self, r.colocate_with) if r.colocate_with else r
        return dict(host.bundle if host.bundle is not None else self.bundle)


DPOResourcePlan = variant(
    ResourcePlan,
    "DPOResourcePlan",
    "DPO's placement: the policy's ranks (actor) and the reference's replicas; only they are placed.",
    actor=TwoThreads,
    reference=TwoThreads,
)
