"""Bad samples: the error every reader raises, the ``on_bad_sample`` policy and its collate.

Every dataset reader (:mod:`fastmtl.data.folder`, :mod:`fastmtl.data.nyuv2`,
:mod:`fastmtl.data.cityscapes`) raises :class:`BadSampleError` for a sample it cannot use and
subclasses :class:`BadSampleDataset`, which applies the policy: ``"error"`` raises,
``"skip"`` returns None (warned once per file) for :func:`collate_skip_bad` to drop.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Callable, Optional

from torch.utils.data import Dataset, default_collate

ON_BAD_SAMPLE = ("error", "skip")


class BadSampleError(ValueError):
    """A sample that cannot be used as it is on disk: unreadable, truncated or not an image,
    sizes that differ, labels out of range, invalid decoded depth, or a missing/ambiguous file.

    ``str(err)`` is ``"{path}: {reason}"``; the parts are kept as ``path`` (a ``Path`` or
    None), ``reason`` and ``index`` (the sample's file index, or None).
    """

    def __init__(self, reason: str, path=None, index: Optional[int] = None) -> None:
        self.reason = str(reason)
        self.path = Path(path) if path is not None else None
        self.index = index
        super().__init__(f"{self.path}: {self.reason}" if self.path is not None else self.reason)

    def __reduce__(self):  # keep path/reason/index through pickling (DataLoader workers)
        return (type(self), (self.reason, self.path, self.index))


class BadSampleWarning(UserWarning):
    """Warned (once per file and dataset object) when ``on_bad_sample="skip"`` drops a sample."""


def collate_skip_bad(batch: list) -> dict:
    """``collate_fn`` for ``on_bad_sample="skip"``: default-collates the samples that are not
    None and adds ``"skipped"``, the number of None entries (dropped bad samples).

    A batch of only None gives ``{"skipped": n}`` alone, so check ``"rgb" in batch`` before
    using it. The batch may thus be smaller than the loader's ``batch_size``.
    """
    good = [s for s in batch if s is not None]
    skipped = len(batch) - len(good)
    if not good:
        return {"skipped": skipped}
    out = default_collate(good)
    if not isinstance(out, dict):
        raise TypeError(f"collate_skip_bad needs dict samples, got {type(good[0]).__name__}")
    out["skipped"] = skipped
    return out


def nonempty_batches(loader):
    """The batches of ``loader`` that hold at least one sample (see :func:`collate_skip_bad`)."""
    return (batch for batch in loader if "rgb" in batch)


def check_policy(on_bad_sample: str) -> str:
    """``on_bad_sample`` itself if it is one of :data:`ON_BAD_SAMPLE`, else a ValueError."""
    if on_bad_sample not in ON_BAD_SAMPLE:
        raise ValueError(f"unknown on_bad_sample {on_bad_sample!r}; choose one of "
                         f"{', '.join(ON_BAD_SAMPLE)}")
    return on_bad_sample


class BadSampleDataset(Dataset):
    """Base of the readers: ``__getitem__`` = :meth:`load` (the subclass's decode-and-check,
    raising :class:`BadSampleError`) under the ``on_bad_sample`` policy, then ``transform``.

    Subclasses set ``root``, ``split``, ``transform`` and ``on_bad_sample`` (checked with
    :func:`check_policy`) and define ``__len__`` and ``load(j) -> dict``.
    """

    root: Path
    split: str
    transform: Optional[Callable[[dict], dict]] = None
    on_bad_sample: str = "error"

    def __getitem__(self, j: int) -> Optional[dict]:
        if self.on_bad_sample == "error":
            sample = self.load(j)
        else:
            try:
                sample = self.load(j)
            except BadSampleError as err:
                warned = self.__dict__.setdefault("_warned", set())
                key = str(err.path)
                if key not in warned:
                    warned.add(key)
                    warnings.warn(f"skipping bad sample {err.index} of {self.root / self.split}: "
                                  f"{err}", BadSampleWarning, stacklevel=2)
                return None
        return self.transform(sample) if self.transform is not None else sample
