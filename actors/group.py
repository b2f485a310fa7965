"""A process group across Ray actors, as torchrun would make it: rank 0's address (a free port on rank 0's node,
found by a task placed where rank 0 will run) handed to every rank, which sets the torchrun environment itself and
joins (`hrlaif_ray.zero.init_distributed`: nccl with CUDA, gloo on CPU). The learner groups (trained roles and
ZeRO-3 frozen ones) and the ZeRO-3 reward replicas form theirs this way."""

from __future__ import annotations

import os
from typing import Any

import ray

from actors.calls import Member, gather
from hrlaif_ray.zero import free_port, init_distributed


@ray.remote(num_cpus=0)
def _address() -> tuple[str, int]:
    """Rank 0's address: this node's IP and a port free on every interface (the other ranks may be elsewhere)."""
    return ray.util.get_node_ip_address(), free_port("")


def rendezvous(role: str, rank0_options: dict[str, Any], timeout_s: float) -> tuple[str, int]:
    """Rank 0's address for a group whose rank 0 is placed by `rank0_options` (its Ray options): the probe runs on
    the same node (its scheduling strategy), taking no resources."""
    keep = {k: v for k, v in rank0_options.items() if k == "scheduling_strategy"}
    probe = Member(role, 0, None, "?")
    (master,) = gather([probe], [_address.options(**keep, num_cpus=0).remote()], timeout_s)
    return master


def join(master: tuple[str, int], rank: int, world: int) -> None:
    """This actor joins the group as rank `rank` of `world` (one device per actor: LOCAL_RANK 0)."""
    os.environ.update(
        MASTER_ADDR=master[0], MASTER_PORT=str(master[1]), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK="0"
    )
    init_distributed()
