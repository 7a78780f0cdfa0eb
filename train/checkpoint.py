"""Orbax checkpoints of the train state with a JSON record of the run, and resuming from them.

The record names what the state belongs to (model, data set, batch size, optimizer, seed) and
where the data stood, so a rerun resumes exactly or refuses clearly. An unreadable newest
checkpoint is skipped for the one before it, and the user is told.
"""

from typing import Any, Optional

import jax
import orbax.checkpoint as ocp
from absl import logging

from models.errors import UserError

FORMAT = 1


class Checkpoints:
    """The checkpoints of one work directory, newest `keep` kept; saves run in the background."""

    def __init__(self, directory: str, keep: int):
        self.directory = directory
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, cleanup_tmp_directories=True)
        self._manager = ocp.CheckpointManager(directory, options=options, item_names=("state", "record"))

    def steps(self) -> list[int]:
        """The steps with a finished checkpoint, oldest first (a save cut short leaves none)."""
        return sorted(self._manager.all_steps())

    def save(self, state, record: dict) -> None:
        """Saves `state` (at its step) with `record`, unless that step is saved already."""
        step = int(jax.device_get(state.step))
        if step in self._manager.all_steps():
            return
        self._manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                         record=ocp.args.JsonSave({**record, "format": FORMAT})),
                           force=True)

    def wait(self) -> None:
        """Blocks until a background save has reached the disk."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        """Finishes pending saves and releases the manager."""
        self._manager.close()

    def _record(self, step: int) -> dict:
        return self._manager.restore(step, args=ocp.args.Composite(record=ocp.args.JsonRestore()))["record"]

    def restore(self, abstract_state, expected: dict) -> Optional[tuple[Any, dict]]:
        """The newest readable checkpoint as (state, record), None when there is none.

        A checkpoint whose record disagrees with `expected` (another model, data set...) is a
        UserError naming both values; an unreadable one is skipped for the one before it.
        """
        steps = self.steps()
        failures = []
        for step in reversed(steps):
            try:
                record = self._record(step)
            except Exception as error:  # pylint: disable=broad-except  # orbax raises many kinds on bad files
                failures.append((step, error))
                continue
            _check_record(self.directory, record, expected)
            try:
                restored = self._manager.restore(step, args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract_state)))["state"]
            except Exception as error:  # pylint: disable=broad-except
                failures.append((step, error))
                continue
            for bad_step, error in failures:
                logging.warning("checkpoint at step %d in %s is unreadable (%s); resuming from step %d instead",
                                bad_step, self.directory, _first_line(error), step)
            return restored, record
        if failures:
            step, error = failures[0]
            raise UserError(f"no readable checkpoint in {self.directory}: the newest (step {step}) fails with "
                            f"{_first_line(error)}; move that directory away to start afresh")
        return None


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return (text.splitlines()[0][:200] if text else type(error).__name__)


def _check_record(directory: str, record: dict, expected: dict) -> None:
    """UserError listing every setting the checkpoint disagrees with this run on."""
    if record.get("format") != FORMAT:
        raise UserError(f"the checkpoint in {directory} has format {record.get('format')!r}, not {FORMAT}; "
                        "use another --workdir")
    differences = [f"{key} {record.get(key)!r} (this run: {value!r})" for key, value in expected.items()
                   if record.get(key) != value]
    if differences:
        raise UserError(f"the checkpoint in {directory} is of another run: {'; '.join(differences)}; "
                        "use another --workdir, or the checkpoint's settings to resume it")
