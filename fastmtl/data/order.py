"""Data order that survives a restart: the permutation depends only on ``(seed, epoch)`` and
every augmentation on ``(seed, epoch, sample index)``, so a resumed run sees the same batches."""
from __future__ import annotations

from typing import Iterator, List, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler


def augmentation_seed(seed: int, epoch: int, index: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1)[0])


class ResumableBatchSampler(Sampler):
    """Batches of ``(index, augmentation seed)`` for one epoch, sharded over ranks.

    The permutation depends only on ``(seed, epoch)``; ``start_batch`` skips batches already
    trained on before a restart. Incomplete last batches are dropped.
    """

    def __init__(self, num_samples: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1,
                 shuffle: bool = True):
        self.num_samples, self.batch_size, self.seed = num_samples, batch_size, seed
        self.rank, self.world_size, self.shuffle = rank, world_size, shuffle
        self.epoch, self.start_batch = 0, 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def __len__(self) -> int:
        return self.num_samples // (self.batch_size * self.world_size)

    def __iter__(self) -> Iterator[List[Tuple[int, int]]]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1000003 + self.epoch)
            order = torch.randperm(self.num_samples, generator=g).tolist()
        else:
            order = list(range(self.num_samples))
        per_rank = order[self.rank::self.world_size]
        for b in range(self.start_batch, len(self)):
            idx = per_rank[b * self.batch_size:(b + 1) * self.batch_size]
            yield [(i, augmentation_seed(self.seed, self.epoch, i)) for i in idx]


class SeededTransform(Dataset):
    """Applies ``transform(sample, generator)`` with a torch generator seeded from the sampler's key."""

    def __init__(self, base: Dataset, transform):
        self.base, self.transform = base, transform

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key):
        index, seed = key if isinstance(key, tuple) else (key, 0)
        sample = self.base[index]  # None: a bad sample under --on-bad-sample skip
        return None if sample is None else self.transform(sample, torch.Generator().manual_seed(seed))

