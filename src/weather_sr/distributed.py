"""Several processes under ``torchrun``: process group, device, rank-0-only side effects.

``torchrun --nproc_per_node N -m weather_sr train|downscale|evaluate ...`` sets RANK /
WORLD_SIZE / LOCAL_RANK; we start NCCL on GPUs and gloo on CPUs. Without those variables
everything is a single process. Training is data-parallel (DDP); sampling splits the
(field, member) batches across ranks (:func:`share_sum` joins them).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from weather_sr.devices import select_device
from weather_sr.errors import UserError


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def setup(device_name: str = "auto", *, mps: bool = False) -> DistInfo:
    """Initialise the process group when launched by torchrun; pick this process's device
    (``mps``: ``auto`` may choose Apple MPS; training keeps it on the CPU, untested there)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = select_device(device_name)
    if device.type == "mps" and device_name == "auto" and not mps:
        device = torch.device("cpu")
    if device.type == "cuda":
        if device_name in ("auto", "cuda") or world > 1:
            device = torch.device("cuda", local % max(torch.cuda.device_count(), 1))
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        try:
            dist.init_process_group(
                backend=backend, device_id=device if backend == "nccl" else None
            )
        except (RuntimeError, ValueError) as error:
            raise UserError(f"could not start the process group ({backend}) under torchrun: "
                            f"{error}") from None
    return DistInfo(rank, world, local, device)


def teardown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank of the running process group (a no-op without one)."""
    if current()[1] > 1:
        dist.barrier()


def any_flag(info: DistInfo, flag: bool) -> bool:
    """True on every rank if ``flag`` is True on any rank (ranks stop at the same step)."""
    if not info.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=info.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def mean_scalar(info: DistInfo, value: float) -> float:
    """Mean of a Python float over ranks (for logging)."""
    if not info.enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=info.device)
    dist.all_reduce(t)
    return float(t.item()) / info.world_size


def broadcast_error(info: DistInfo, message: str | None) -> None:
    """Raise the same UserError on every rank if rank 0 found a problem (``message`` not None)."""
    if not info.enabled:
        if message:
            raise UserError(message)
        return
    box = [message]
    dist.broadcast_object_list(box, src=0)
    if box[0]:
        raise UserError(box[0])


def current() -> tuple[int, int]:
    """(rank, world size) of the running process group; (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def share_sum(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` summed over the ranks of the running process group, in place (a no-op without
    one). Each rank fills its own part and leaves zeros elsewhere, so the sum is exact: x + 0."""
    if current()[1] == 1:
        return tensor
    if dist.get_backend() == "nccl":  # NCCL reduces GPU tensors only
        on_gpu = tensor.to(torch.device("cuda", torch.cuda.current_device()))
        dist.all_reduce(on_gpu)
        tensor.copy_(on_gpu.cpu())
    else:
        dist.all_reduce(tensor)
    return tensor
