"""Several processes on one run: torchrun (or SLURM's srun), PyTorch distributed underneath.

Every rank fills the feature cache of every cell; the cache's shard claims (``tips_bench.cache``) split each
split's extraction across the ranks by shard, so each shard is extracted once, by whichever rank claims it
first. Rank 0 alone evaluates the probes, encodes prompts and appends the result rows (exactly once); the other
ranks go on to fill the next cells' caches meanwhile. Launch:

    torchrun --nproc-per-node 4 -m tips_bench run --backbone tips_g14 --task ade20k_seg,nyu_depth
    srun --ntasks-per-node 4 python -m tips_bench run ...      # with MASTER_ADDR / MASTER_PORT set

The process group (gloo on CPU, NCCL on CUDA) is only used for the final barrier; ranks never exchange tensors.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

from tips_bench.errors import TipsBenchError

#: Ranks wait this long for rank 0's last evaluation at the final barrier.
BARRIER_TIMEOUT = datetime.timedelta(hours=48)


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self, device: str) -> str:
        """Each rank's own GPU (``cuda`` -> ``cuda:<local rank>``); CPU and explicit devices unchanged."""
        return f"cuda:{self.local_rank}" if self.enabled and device == "cuda" else device


def detect(env: dict[str, str] | None = None) -> DistInfo:
    """The launcher's environment: torchrun's RANK / WORLD_SIZE / LOCAL_RANK, else SLURM's SLURM_PROCID /
    SLURM_NTASKS / SLURM_LOCALID, else a single process."""
    env = dict(os.environ if env is None else env)
    keys = (("RANK", "WORLD_SIZE", "LOCAL_RANK"), ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID"))
    for rank, world, local in keys:
        if rank in env and world in env:
            try:
                return DistInfo(int(env[rank]), int(env[world]), int(env.get(local, 0)))
            except ValueError as exc:
                raise TipsBenchError(f"{rank}={env[rank]} / {world}={env[world]} are not integers; check the "
                                     "launcher's environment") from exc
    return DistInfo()


def init(info: DistInfo, device: str) -> None:
    """Join the process group (needs MASTER_ADDR and MASTER_PORT, which torchrun sets; set them under srun)."""
    if not info.enabled:
        return
    import torch.distributed as dist

    if dist.is_initialized():
        return
    missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise TipsBenchError(f"a distributed run needs {' and '.join(missing)} in the environment (torchrun sets "
                             "them; under srun export the first node's address and a free port)")
    os.environ.setdefault("RANK", str(info.rank))
    os.environ.setdefault("WORLD_SIZE", str(info.world_size))
    backend = "nccl" if device.startswith("cuda") else "gloo"
    if backend == "nccl":
        import torch

        torch.cuda.set_device(info.local_rank)
    dist.init_process_group(backend, rank=info.rank, world_size=info.world_size, timeout=BARRIER_TIMEOUT)


def finish(info: DistInfo) -> None:
    """Wait for every rank (rank 0's evaluations), then leave the process group."""
    if not info.enabled:
        return
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
