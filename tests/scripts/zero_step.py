"""A few DeepSpeed ZeRO steps on a model folder, as one rank of a torchrun job; rank 0 writes JSON results.

Usage: torchrun --nproc-per-node 2 zero_step.py MODEL_DIR OUT_JSON STAGE STEPS
"""

import json
import sys

import deepspeed
import torch
import torch.distributed as dist
from transformers import AutoModelForCausalLM

from hrlaif_ray.zero import init_distributed, zero_config


def main() -> None:
    model_dir, out, stage, steps = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    rank, world = init_distributed()
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    before = [p.detach().clone() for p in model.parameters()]
    optim = torch.optim.AdamW(model.parameters(), lr=1e-2)
    engine, *_ = deepspeed.initialize(model=model, optimizer=optim, config=zero_config(stage, 4, world))
    gen = torch.Generator().manual_seed(100 + rank)  # each rank its own micro-batch, as data parallelism does
    ids = torch.randint(0, model.config.vocab_size, (4, 16), generator=gen)
    losses = []
    for _ in range(steps):
        loss = engine(input_ids=ids, labels=ids).loss
        engine.backward(loss)
        engine.step()
        losses.append(loss.item())
    # ZeRO-2 keeps full parameters on every rank: they must agree after the update, and have moved.
    with deepspeed.zero.GatheredParameters(list(engine.module.parameters()), enabled=stage == 3):
        after = [p.detach().clone() for p in engine.module.parameters()]
    checksum = torch.tensor([sum(float(p.double().sum()) for p in after)], dtype=torch.float64)
    sums = [torch.zeros_like(checksum) for _ in range(world)]
    dist.all_gather(sums, checksum)
    moved = sum(float((a - b).abs().max()) > 0 for a, b in zip(after, before))
    if rank == 0:
        with open(out, "w") as fh:
            json.dump(
                {
                    "losses": losses,
                    "checksums": [float(s) for s in sums],
                    "moved": moved,
                    "n_params": len(before),
                    "world": world,
                    "backend": dist.get_backend(),
                },
                fh,
            )
    dist.barrier()
    dist.destroy_process_group()  # gloo's threads still running at interpreter exit abort the process now and then


if __name__ == "__main__":
    main()
