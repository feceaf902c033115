"""torch.distributed helpers for ``torchrun`` training: init from the environment, rank checks, gathers."""
from __future__ import annotations

import logging
import os
from typing import List

import torch
import torch.distributed as dist

__all__ = ["init_from_env", "is_distributed", "rank", "world_size", "is_main", "barrier", "all_gather_cat",
           "shard_loader", "gather_objects", "shutdown", "unwrap", "local_device", "use_cuda"]

_logger = logging.getLogger(__name__)


def use_cuda(use_gpu: bool = True) -> bool:
    """The one no-CUDA rule: run on CUDA when asked (``use_gpu``) and a GPU is there; else on the CPU."""
    return bool(use_gpu) and torch.cuda.is_available()


def local_device(use_gpu: bool = True) -> torch.device:
    """This process's device: ``cuda:LOCAL_RANK`` (``torchrun``) or ``cuda`` with a GPU and ``use_gpu``, else CPU."""
    if not use_cuda(use_gpu):
        return torch.device("cpu")
    return torch.device("cuda", int(os.environ["LOCAL_RANK"])) if "LOCAL_RANK" in os.environ else torch.device("cuda")


def init_from_env() -> torch.device:
    """Start the process group when launched by ``torchrun`` (``WORLD_SIZE > 1``); returns this rank's device.

    NCCL with one GPU per process (``LOCAL_RANK``) on CUDA, gloo on CPU.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    else:
        device = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        _logger.info("process group started: rank %d of %d on %s", rank(), world_size(), device)
    return device


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if is_distributed():
        dist.barrier()


class _GatherCat(torch.autograd.Function):
    """All-gather along dim 0 (same size on every rank); the backward sums the gradients of every rank's copy of
    the loss and returns this rank's slice, which is the gradient of a loss computed identically on every rank."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        parts: List[torch.Tensor] = [torch.empty_like(tensor) for _ in range(world_size())]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad)
        size = grad.shape[0] // world_size()
        return grad[rank() * size:(rank() + 1) * size]


def all_gather_cat(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` (same shape on every rank) from every rank along dim 0, differentiably."""
    if not is_distributed():
        return tensor
    return _GatherCat.apply(tensor)


def shard_loader(loader):
    """This rank's contiguous shard of an evaluation loader (the loader itself when not distributed)."""
    if not is_distributed():
        return loader
    size = len(loader.dataset)
    start, end = size * rank() // world_size(), size * (rank() + 1) // world_size()
    return torch.utils.data.DataLoader(torch.utils.data.Subset(loader.dataset, range(start, end)),
                                       batch_size=loader.batch_size, shuffle=False, num_workers=loader.num_workers,
                                       pin_memory=loader.pin_memory, drop_last=False)


def gather_objects(tensor):
    """Concatenate a (possibly empty, ``None``) CPU tensor from every rank in rank order."""
    if not is_distributed():
        return tensor
    parts = [None] * world_size()
    dist.all_gather_object(parts, tensor)
    return torch.cat([p for p in parts if p is not None])


def shutdown() -> None:
    """Wait for every rank, then end the process group (a clean exit for ``torchrun``)."""
    if is_distributed():
        dist.barrier()
        dist.destroy_process_group()


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside a DataParallel / DistributedDataParallel wrapper (or the model itself)."""
    wrappers = (torch.nn.DataParallel, torch.nn.parallel.DistributedDataParallel)
    return model.module if isinstance(model, wrappers) else model
