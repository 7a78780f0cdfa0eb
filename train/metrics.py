"""Training metrics: one record per log or evaluation, to the console, `metrics.jsonl` and TensorBoard.

On resume the records after the checkpoint's step are dropped (the steps are run again), from
`metrics.jsonl` by rewriting it atomically and from TensorBoard with tensorboardX's purge step.
"""

import json
import os
from typing import Optional

from measure import files

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"


def _kept_lines(path: str, last_step: int) -> list[str]:
    """The lines of `path` up to `last_step`; a torn last line (a killed writer) is dropped."""
    kept = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and isinstance(record.get("step"), int) and record["step"] <= last_step:
                kept.append(json.dumps(record) + "\n")
    return kept


def format_duration(seconds: float) -> str:
    """Seconds as 1h02m03s, 2m03s or 3s."""
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class MetricsLog:
    """Writes metric records where asked; `workdir=None` keeps them in memory only."""

    def __init__(self, workdir: Optional[str], *, start_step: int, total_steps: int, batch_size: int,
                 console: bool, tensorboard: bool):
        self.records: list[dict] = []
        self.total_steps = total_steps
        self._batch_size = batch_size
        self._console = console
        self._file = None
        self._writer = None
        if workdir is None:
            return
        path = os.path.join(workdir, METRICS_FILE)
        if os.path.exists(path):
            files.atomic_write(path, "".join(_kept_lines(path, start_step)))
        self._file = open(path, "a", encoding="utf-8")  # pylint: disable=consider-using-with
        if tensorboard:
            import tensorboardX  # pylint: disable=import-outside-toplevel  # only runs that ask pay for it
            self._writer = tensorboardX.SummaryWriter(os.path.join(workdir, TENSORBOARD_DIR),
                                                      purge_step=start_step + 1 if start_step else None)

    def time_left_s(self, record: dict) -> Optional[float]:
        """The time the remaining steps take at a training record's rate (None without one)."""
        rate = record.get("images_per_s")
        return (self.total_steps - record["step"]) * self._batch_size / rate if rate else None

    def write(self, split: str, step: int, metrics: dict) -> None:
        """Records `metrics` (floats) of `split` ("train" or "eval") at `step`."""
        record = {"step": step, "split": split, **{k: float(v) for k, v in metrics.items()}}
        self.records.append(record)
        if self._file is not None:
            self._file.write(json.dumps(record) + "\n")
            self._file.flush()
        if self._writer is not None:
            for name, value in metrics.items():
                self._writer.add_scalar(f"{split}/{name}", float(value), step)
        if self._console:
            print(self._line(record), flush=True)

    def _line(self, record: dict) -> str:
        step = record["step"]
        parts = [f"[{record['split']}] step {step}/{self.total_steps}"]
        if "epoch" in record:
            parts.append(f"epoch {record['epoch']:.2f}")
        parts.append(f"loss {record['loss']:.4f}")
        parts += [f"{name} {record[name]:.2%}" for name in ("top1", "top5") if name in record]
        if "images_per_s" in record:
            parts.append(f"{record['images_per_s']:,.0f} img/s")
        if "learning_rate" in record:
            parts.append(f"lr {record['learning_rate']:.4g}")
        left = self.time_left_s(record)
        if left is not None:
            parts.append(f"left {format_duration(left)}")
        return "  ".join(parts)

    def sync(self) -> None:
        """Makes what was written durable (at checkpoints)."""
        if self._file is not None:
            os.fsync(self._file.fileno())
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        """Flushes and closes the files."""
        if self._file is not None:
            self.sync()
            self._file.close()
            self._file = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None
