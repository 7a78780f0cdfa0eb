"""Batches that can tell and restore their place, and the checks every input source shares.

Training batches come forever, epoch after epoch, and resume exactly: a source gives the batches
of epoch e from batch i on, a function of (seed, e) only, so the position saved with a checkpoint
continues with the very batches the uninterrupted run would have seen.
"""

import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from core.errors import UserError
from models.registry import MAX_RESOLUTION

Batch = dict[str, np.ndarray]


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What a training run needs to know about a data set before reading it."""

    name: str
    num_classes: int
    train_examples: int  # in the training split, all processes together
    eval_examples: int  # in the evaluation split, all processes together
    eval_split: str  # "validation" where the data set has one (imagenet2012), else "test"


class Batches:
    """Endless training batches of one process that can tell, and restore, where they are."""

    def __init__(self, open_epoch: Callable[[int, int], Iterator[Batch]], *, epoch_batches: int,
                 batch_size: int, process_count: int, position: dict | None = None):
        """`open_epoch(epoch, first_batch)` yields that epoch's batches from `first_batch` on."""
        self._open_epoch = open_epoch
        self.epoch_batches = epoch_batches  # full batches per epoch of this process
        self.batch_size = batch_size
        self.process_count = process_count
        self._epoch, self._batch = _start(position, epoch_batches, batch_size, process_count)
        self._batches: Iterator[Batch] | None = None

    def __iter__(self) -> "Batches":
        """The batches themselves: one pass never ends."""
        return self

    def __next__(self) -> Batch:
        """The next batch, opening the next epoch when this one is used up."""
        if self._batches is None:
            self._batches = self._open_epoch(self._epoch, self._batch)
        batch = next(self._batches, None)
        if batch is None:  # A StopIteration here would end the caller's loop silently.
            raise RuntimeError(f"epoch {self._epoch} ended after {self._batch} of {self.epoch_batches} batches")
        self._batch += 1
        if self._batch == self.epoch_batches:
            self._epoch, self._batch, self._batches = self._epoch + 1, 0, None
        return batch

    def position(self) -> dict[str, int]:
        """Where the next batch comes from, as JSON-ready ints: pass it to train_batches(position=)."""
        return {"epoch": self._epoch, "batch": self._batch, "batch_size": self.batch_size,
                "process_count": self.process_count}


def check_layout(batch_size: Any, resolution: Any, process_index: Any, process_count: Any) -> None:
    """Refuses a batch size, resolution or process layout that cannot be read, in one line."""
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise UserError(f"the batch size must be an integer >= 1, not {batch_size!r}")
    if not isinstance(resolution, (int, np.integer)) or not 1 <= resolution <= MAX_RESOLUTION:
        raise UserError(f"the input resolution must be an integer in 1..{MAX_RESOLUTION}, not {resolution!r}")
    if not isinstance(process_count, (int, np.integer)) or process_count < 1:
        raise UserError(f"the process count must be an integer >= 1, not {process_count!r}")
    if not isinstance(process_index, (int, np.integer)) or not 0 <= process_index < process_count:
        raise UserError(f"the process index must be in 0..{process_count - 1}, not {process_index!r}")


def _start(position: dict | None, epoch_batches: int, batch_size: int,
           process_count: int) -> tuple[int, int]:
    """The (epoch, batch) a saved position says comes next, checked against this run's layout."""
    if position is None:
        return 0, 0
    if not isinstance(position, dict) or not all(
            isinstance(position.get(key), int) for key in ("epoch", "batch")):
        raise UserError(f"bad input position {position!r}: give back what Batches.position() returned")
    epoch, batch = position["epoch"], position["batch"]
    saved = (position.get("batch_size", batch_size), position.get("process_count", process_count))
    # Another batch size or process count reads the epoch in other pieces: the saved place means
    # nothing there.
    if saved != (batch_size, process_count):
        raise UserError(f"the input position was saved with batch size {saved[0]} on {saved[1]} processes, "
                        f"not {batch_size} on {process_count}: resume with the same, or without a position")
    if epoch < 0 or not 0 <= batch <= epoch_batches:
        raise UserError(f"bad input position {position!r}: an epoch has {epoch_batches} batches")
    return (epoch + 1, 0) if batch == epoch_batches else (epoch, batch)


def epoch_batch_count(host_examples: int, batch_size: int, process_count: int) -> int:
    """Full batches per epoch of one process; refuses a batch larger than its part of the data."""
    if host_examples < batch_size:
        raise UserError(f"the batch size {batch_size} exceeds the {host_examples} training examples each of "
                        f"{process_count} processes reads: lower the batch size")
    return host_examples // batch_size


def eval_batch_count(host_examples: int, eval_examples: int, batch_size: int, process_count: int) -> int:
    """Evaluation batches per process: the same on every process, enough for the largest part."""
    largest_part = max(host_examples, -(-eval_examples // process_count))
    return -(-largest_part // batch_size)
