"""P x K identity sampler that is seeded per epoch and splits each global batch into whole identities per rank.

Reference: Hermans et al. 2017 (P x K batches); the same algorithm as torchreid's ``RandomIdentitySampler``.
"""
from __future__ import annotations

import random
from collections import defaultdict
from typing import Dict, Iterator, List, Sequence

from torch.utils.data import Sampler

__all__ = ["DistributedIdentitySampler"]


class DistributedIdentitySampler(Sampler[int]):
    """torchreid's P x K algorithm with its own seeded RNG, sharded over ``world_size`` ranks.

    Per identity, its indices are shuffled (re-sampled with replacement up to K when it has fewer) and cut into
    chunks of K; then P distinct identities with chunks left are drawn for each *global* batch of
    ``batch_size = P x K`` images, until fewer than P remain. Rank ``r`` gets chunks ``r*P/W .. (r+1)*P/W - 1`` of
    every global batch, so each rank's local batch holds whole identities (batch-hard mining stays valid) and the
    ranks together see exactly the single-process batch. Call :meth:`set_epoch` every epoch.

    Reference: torchreid ``RandomIdentitySampler``; Hermans et al. 2017.

    Args:
        data_source: torchreid items ``(path, pid, camid, ...)``.
        batch_size: global batch ``P x K``.
        num_instances: K.
        rank: this process's rank.
        world_size: number of processes (must divide P).
        seed: base seed; the epoch is added to it.
    """

    def __init__(self, data_source: Sequence, batch_size: int, num_instances: int, rank: int = 0,
                 world_size: int = 1, seed: int = 0) -> None:
        if batch_size % num_instances:
            raise ValueError(f"batch_size {batch_size} is not a multiple of num_instances {num_instances}")
        self.num_pids_per_batch = batch_size // num_instances
        if self.num_pids_per_batch % world_size:
            raise ValueError(f"{self.num_pids_per_batch} identities per batch cannot be split over {world_size} "
                             f"processes; choose train.batch_size / sampler.num_instances divisible by the GPU count")
        self.num_instances = num_instances
        self.rank, self.world_size, self.seed, self.epoch = rank, world_size, seed, 0
        self.index_dic: Dict[int, List[int]] = defaultdict(list)
        for index, item in enumerate(data_source):
            self.index_dic[item[1]].append(index)
        self.pids = sorted(self.index_dic)
        if len(self.pids) < self.num_pids_per_batch:
            raise ValueError(f"{len(self.pids)} training identities < {self.num_pids_per_batch} per batch")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _global_batches(self) -> List[List[List[int]]]:
        rng = random.Random(self.seed * 100003 + self.epoch)
        chunks: Dict[int, List[List[int]]] = {}
        for pid in self.pids:
            idxs = list(self.index_dic[pid])
            if len(idxs) < self.num_instances:
                idxs = [rng.choice(idxs) for _ in range(self.num_instances)]
            rng.shuffle(idxs)
            chunks[pid] = [idxs[i:i + self.num_instances]
                           for i in range(0, len(idxs) - self.num_instances + 1, self.num_instances)]
        available = [pid for pid in self.pids if chunks[pid]]
        batches = []
        while len(available) >= self.num_pids_per_batch:
            chosen = rng.sample(available, self.num_pids_per_batch)
            batches.append([chunks[pid].pop(0) for pid in chosen])
            available = [pid for pid in available if chunks[pid]]
        return batches

    def __iter__(self) -> Iterator[int]:
        per_rank = self.num_pids_per_batch // self.world_size
        for batch in self._global_batches():
            for chunk in batch[self.rank * per_rank:(self.rank + 1) * per_rank]:
                yield from chunk

    def __len__(self) -> int:
        return len(self._global_batches()) * self.num_pids_per_batch // self.world_size * self.num_instances
