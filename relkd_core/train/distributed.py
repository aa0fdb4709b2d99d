"""torch.distributed set-up for ``torchrun``: gloo on CPU, nccl on CUDA; one process per rank.

Without torchrun's environment (``WORLD_SIZE`` unset or 1) everything runs in-process and no
process group is created.
"""

from __future__ import annotations

import dataclasses
import datetime
import os

import torch
import torch.distributed as dist

from relkd_core.errors import ConfigError

__all__ = ['DistContext', 'init_distributed']


@dataclasses.dataclass(frozen=True)
class DistContext:
    """Where this process stands: rank, world size and its device."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0: the only rank that writes files."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def any(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is true on any (e.g. a stop signal on one rank)."""
        if not self.distributed:
            return flag
        value = torch.tensor([1.0 if flag else 0.0], device=self._collective_device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item() > 0)

    def mean(self, values: torch.Tensor) -> torch.Tensor:
        """The mean of ``values`` over ranks (for logging)."""
        if not self.distributed:
            return values
        out = values.detach().to(self._collective_device, torch.float32).clone()
        dist.all_reduce(out)
        return out / self.world_size

    @property
    def _collective_device(self) -> torch.device:
        return self.device if dist.get_backend() == 'nccl' else torch.device('cpu')

    def close(self) -> None:
        if self.distributed and dist.is_initialized():
            dist.destroy_process_group()


def _resolve_device(name: str, local_rank: int) -> torch.device:
    if name == 'auto':
        name = 'cuda' if torch.cuda.is_available() else 'cpu'
    if name.startswith('cuda'):
        if not torch.cuda.is_available():
            raise ConfigError(f'device: {name!r} requested but CUDA is not available to this '
                              'torch build; use device: cpu (or auto)')
        if name == 'cuda':
            return torch.device('cuda', local_rank % torch.cuda.device_count())
    return torch.device(name)


def init_distributed(device: str = 'auto', timeout_s: float = 1800.0) -> DistContext:
    """Join torchrun's process group if there is one, and pick this rank's device.

    ``device='cuda'`` under torchrun means the GPU ``LOCAL_RANK``. The timeout is generous
    because rank 0 may prepare a dataset while the others wait at the first barrier.
    """
    world_size = int(os.environ.get('WORLD_SIZE', '1'))
    rank = int(os.environ.get('RANK', '0'))
    local_rank = int(os.environ.get('LOCAL_RANK', '0'))
    target = _resolve_device(device, local_rank)
    if world_size > 1 and not dist.is_initialized():
        backend = 'nccl' if target.type == 'cuda' else 'gloo'
        if target.type == 'cuda':
            torch.cuda.set_device(target)
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size,
                                timeout=datetime.timedelta(seconds=timeout_s))
    return DistContext(rank=rank, world_size=world_size, device=target)
