"""Training's files: relative work directories, full disks, damaged checkpoint records, metrics.jsonl, units."""

import errno
import gc
import json
import logging
import os
import re
import shutil
import struct
import subprocess
import sys

import jax
import numpy as np
import pytest

from core import files
from core.errors import UserError
from train import checkpoint, trainer
from train.batches import Batches
from train.config import TrainConfig
from train.metrics import METRICS_FILE, MetricsLog, TENSORBOARD_DIR

TINY = "resnet18:depths=1-1-1-1,width=0.125,resolution=32"  # the smallest checkpoint that is still a ResNet
PAGE = 4096  # tmpfs allocates whole pages


def _config(**overrides) -> TrainConfig:
    settings = dict(model=TINY, dataset="digits", batch_size=32, steps=4, learning_rate=0.05, log_every=2,
                    eval_every=1000, checkpoint_every=2, schedule="step", decay_epochs=())
    return TrainConfig(**{**settings, **overrides})


def _steps(workdir) -> list[str]:
    return sorted(os.listdir(os.path.join(workdir, "checkpoints")))


@pytest.fixture
def small_disk():
    """Mounts tmpfs file systems of a given size (we run as root); every one is unmounted after the test."""
    mounted = []

    def mount(path, size: int):
        os.makedirs(path, exist_ok=True)
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                                capture_output=True, text=True, check=False)
        if result.returncode:
            pytest.skip(f"cannot mount a small tmpfs to fill up (needs root): {result.stderr.strip()}")
        mounted.append(path)
        return path

    yield mount
    for path in reversed(mounted):
        subprocess.run(["umount", "--lazy", str(path)], check=False)


def _fill(directory) -> None:
    """Fills the file system of `directory` to the last page with a filler file."""
    fd = os.open(os.path.join(directory, "filler"), os.O_WRONLY | os.O_CREAT)
    block = b"\0" * (64 * PAGE)
    try:
        while True:
            os.write(fd, block)
    except OSError as error:
        assert error.errno == errno.ENOSPC
    finally:
        os.close(fd)


@pytest.fixture(scope="module")
def trained_dir(tmp_path_factory):
    """A work directory after 4 steps, with checkpoints at steps 2 and 4 (copied by each test)."""
    workdir = tmp_path_factory.mktemp("trained")
    trainer.fit(_config(), str(workdir))
    return workdir


# Relative work directories. ---------------------------------------------------------------------


def test_a_relative_workdir_checkpoints_and_resumes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first = trainer.fit(_config(steps=2), os.path.join("runs", "digits"))
    assert first["step"] == 2 and _steps(tmp_path / "runs" / "digits") == ["2"]
    resumed = trainer.fit(_config(), os.path.join("runs", "digits"))
    assert (resumed["step"], resumed["steps_this_run"]) == (4, 2)
    assert _steps(tmp_path / "runs" / "digits") == ["2", "4"]
    # fit returns fractions (the explorer stores them); its history, like metrics.jsonl, says percent
    final = resumed["history"][-1]
    assert final["split"] == "eval" and "top1" not in final
    assert 0.0 <= resumed["eval_top1"] <= resumed["eval_top5"] <= 1.0
    assert final["top1_pct"] == pytest.approx(100 * resumed["eval_top1"])
    assert final["top5_pct"] == pytest.approx(100 * resumed["eval_top5"])


# A full disk. -----------------------------------------------------------------------------------


def _page_bytes(directory) -> int:
    """What the files under `directory` take on a tmpfs, whole pages each."""
    return sum(-(-os.path.getsize(os.path.join(root, name)) // PAGE) * PAGE
               for root, _, names in os.walk(directory) for name in names)


def test_a_full_disk_at_a_checkpoint_is_one_line_and_keeps_the_last_good_one(trained_dir, tmp_path, small_disk):
    """Room for one checkpoint and a half: the second save fails, cleanly."""
    size = _page_bytes(trained_dir / "checkpoints" / "4")
    workdir = small_disk(tmp_path / "disk", size * 3 // 2) / "work"
    result = subprocess.run([sys.executable, "-m", "train", f"--model={TINY}", "--dataset=digits", "--batch_size=32",
                             "--steps=8", "--log_every=2", "--checkpoint_every=2",
                             f"--workdir={workdir}"], capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 2, result.stderr
    assert result.stderr == (f"error: cannot save the checkpoint of step 4 in {workdir}/checkpoints: No space left "
                             "on device; free space there or use another --workdir; the checkpoint of step 2 is "
                             "kept\n"), result.stderr
    assert _steps(workdir) == ["2"]  # no temporary left behind
    state = trainer.load_state(_config(steps=8), str(workdir))
    assert int(state.step) == 2
    assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(jax.device_get(state.params)))


def _log(workdir, **overrides) -> MetricsLog:
    settings = dict(start_step=0, total_steps=100, batch_size=32, console=False, tensorboard=False)
    return MetricsLog(str(workdir), **{**settings, **overrides})


_TRAIN = {"loss": 1.5, "top1": 0.5, "top5": 0.75, "epoch": 0.1, "learning_rate": 0.1, "elapsed_s": 1.0}


def test_a_full_disk_under_metrics_jsonl_is_one_user_error(tmp_path, small_disk, capfd):
    workdir = small_disk(tmp_path / "work", 16 * PAGE)
    log = _log(workdir)
    _fill(workdir)
    with pytest.raises(UserError) as raised:
        for step in range(1, 10_000):  # the file's last page may take a few records first
            log.write("train", step, _TRAIN)
    assert str(raised.value) == (f"cannot write {workdir}/{METRICS_FILE}: No space left on device; "
                                 "free space there or use another --workdir")
    log.sync()  # what failed was reported: the file is left alone
    log.close()
    del log
    gc.collect()  # nothing buffered is left to fail again
    assert capfd.readouterr().err == ""


def test_a_full_disk_under_tensorboard_is_one_user_error_by_sync(tmp_path, small_disk, capfd):
    """TensorBoard's events fail where the loop sees it, not in a thread (whose death would hang the run)."""
    workdir = tmp_path / "work"
    events = small_disk(workdir / TENSORBOARD_DIR, 16 * PAGE)
    log = _log(workdir, tensorboard=True)
    _fill(events)
    with pytest.raises(UserError) as raised:
        for step in range(1, 4):
            log.write("train", step, _TRAIN)
        log.sync()
    assert str(raised.value) == (f"cannot write TensorBoard events in {events}: No space left on device; "
                                 "free space there or use another --workdir")
    log.write("train", 4, _TRAIN)  # metrics.jsonl, on another disk, goes on
    log.close()
    del log
    gc.collect()
    assert capfd.readouterr().err == ""
    with open(workdir / METRICS_FILE) as f:
        assert [json.loads(line)["step"] for line in f] == [1, 2, 3, 4]


def test_out_of_space_is_recognised_anywhere_in_the_chain():
    try:
        try:
            raise OSError(errno.EDQUOT, os.strerror(errno.EDQUOT))
        except OSError as error:
            raise ValueError("writing failed") from error
    except ValueError as error:
        assert files.full_disk_reason(error) == os.strerror(errno.EDQUOT)
    tensorstore = ValueError('RESOURCE_EXHAUSTED: Error writing "x": Failed to write 41126 bytes to file 13: '
                             "No space left on device [os_error_code='28']")
    assert files.full_disk_reason(tensorstore) == os.strerror(errno.ENOSPC)
    assert files.full_disk_reason(ValueError("RESOURCE_EXHAUSTED: Out of memory allocating 4 bytes")) is None


# Damaged checkpoint records. --------------------------------------------------------------------


@pytest.fixture
def workdir(trained_dir, tmp_path):
    """A copy of the trained work directory that the test may change."""
    shutil.copytree(trained_dir, tmp_path / "work")
    return tmp_path / "work"


def _record_path(workdir, step: int = 4):
    """Where orbax keeps the JSON of a checkpoint's `record` item."""
    return workdir / "checkpoints" / str(step) / "record" / "metadata"


def _without(key):
    return lambda record: {k: v for k, v in record.items() if k != key}


def _with(**changes):
    return lambda record: {**record, **changes}


def _with_position(**changes):
    return lambda record: {**record, "position": {**record["position"], **changes}}


def _without_position(key):
    return lambda record: {**record, "position": {k: v for k, v in record["position"].items() if k != key}}


_DAMAGED = "is damaged: its record"
_FIX = "; move {step_dir} away to resume from the one before, or use another --workdir"


_RECORD_CASES = [  # (id, how the record is changed, the message after "the checkpoint of step 4 in ... ")
    ("list record", lambda record: [record], f"{_DAMAGED} is a JSON array, not an object{_FIX}"),
    ("NaN record", lambda record: float("nan"), f"{_DAMAGED} is a JSON number, not an object{_FIX}"),
    ("no format", _without("format"), f"{_DAMAGED} has no format{_FIX}"),
    ("format 2", _with(format=2), "has format 2, not 1; use another --workdir"),
    ("no model", _without("model"), f"{_DAMAGED} has no model{_FIX}"),
    ("model a number", _with(model=5), f"{_DAMAGED}'s model is 5, not a string{_FIX}"),
    ("batch_size a string", _with(batch_size="32"), f"{_DAMAGED}'s batch_size is \"32\", not an integer{_FIX}"),
    ("batch_size a boolean", _with(batch_size=True), f"{_DAMAGED}'s batch_size is true, not an integer{_FIX}"),
    ("seed null", _with(seed=None), f"{_DAMAGED}'s seed is null, not an integer{_FIX}"),
    ("another seed", _with(seed=1),
     "is of another run: seed 1 (this run: 0); use another --workdir, or the checkpoint's settings to resume it"),
    ("no resolution", _without("resolution"), f"{_DAMAGED} has no resolution{_FIX}"),
    ("resolution 0", _with(resolution=0), f"{_DAMAGED}'s resolution is 0, not an integer in 1..4096{_FIX}"),
    ("num_classes a fraction", _with(num_classes=2.5),
     f"{_DAMAGED}'s num_classes is 2.5, not an integer >= 1{_FIX}"),
    ("no position", _without("position"), f"{_DAMAGED} has no position{_FIX}"),
    ("position NaN", _with(position=float("nan")), f"{_DAMAGED}'s position is NaN, not an object{_FIX}"),
    ("position a list", _with(position=[0, 4]), f"{_DAMAGED}'s position is [0, 4], not an object{_FIX}"),
    ("no position.epoch", _without_position("epoch"), f"{_DAMAGED} has no position.epoch{_FIX}"),
    ("position.epoch negative", _with_position(epoch=-1),
     f"{_DAMAGED}'s position.epoch is -1, not an integer >= 0{_FIX}"),
    ("position.batch NaN", _with_position(batch=float("nan")),
     f"{_DAMAGED}'s position.batch is NaN, not an integer >= 0{_FIX}"),
    ("position.batch a float", _with_position(batch=4.0),
     f"{_DAMAGED}'s position.batch is 4.0, not an integer >= 0{_FIX}"),
    ("position past the step", _with_position(batch=10**9),
     f"{_DAMAGED}'s position (epoch 0, batch 1000000000) lies beyond the 4 batches its steps read{_FIX}"),
    ("position.batch_size 0", _with_position(batch_size=0),
     f"{_DAMAGED}'s position.batch_size is 0, not an integer >= 1{_FIX}"),
    ("position.batch_size not the share", _with_position(batch_size=16),
     f"{_DAMAGED}'s position.batch_size 16 on 1 process(es) does not make its batch_size 32{_FIX}"),
    ("position.process_count a string", _with_position(process_count="1"),
     f"{_DAMAGED}'s position.process_count is \"1\", not an integer >= 1{_FIX}"),
]


@pytest.mark.parametrize("change, message", [pytest.param(change, message, id=name)
                                             for name, change, message in _RECORD_CASES])
def test_a_damaged_record_is_one_line_naming_the_checkpoint_and_the_field(workdir, caplog, change, message):
    path = _record_path(workdir)
    record = json.loads(path.read_text())
    path.write_text(json.dumps(change(record)))
    with pytest.raises(UserError) as raised:
        trainer.load_state(_config(), str(workdir))
    checkpoints = os.path.join(str(workdir), "checkpoints")
    where = f"the checkpoint of step 4 in {checkpoints} "
    assert str(raised.value) == where + message.format(step_dir=os.path.join(checkpoints, "4"))
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]  # orbax's own logs stay quiet


def test_the_record_check_knows_every_field_of_a_position():
    batches = Batches(lambda epoch, batch: iter(()), epoch_batches=3, batch_size=8, process_count=1)
    assert set(checkpoint.POSITION_MINIMUMS) == set(batches.position())


# metrics.jsonl on resume. -----------------------------------------------------------------------


def _lines(*records) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


@pytest.mark.parametrize("bad", ["garbage", "[1, 2]", '{"split": "train"}', '{"step": "2"}', ""])
def test_a_corrupt_line_before_the_last_is_named_with_the_fix(tmp_path, bad):
    text = _lines({"step": 1, "split": "train"}) + bad + "\n" + _lines({"step": 3, "split": "train"})
    (tmp_path / METRICS_FILE).write_text(text)
    with pytest.raises(UserError) as raised:
        _log(tmp_path, start_step=3)
    assert str(raised.value) == (f"{tmp_path}/{METRICS_FILE} line 2 is not a JSON object with an integer step; "
                                 "move the file away or delete that line")
    assert (tmp_path / METRICS_FILE).read_text() == text  # left as it was


@pytest.mark.parametrize("tail", ['{"step": 3, "spl', '{"step": 3, "spl\n'])
def test_a_torn_last_line_and_later_steps_are_dropped_on_resume(tmp_path, tail):
    kept = _lines({"step": 1, "split": "train"}, {"step": 2, "split": "eval"})
    (tmp_path / METRICS_FILE).write_text(kept + _lines({"step": 5, "split": "train"}) + tail)
    _log(tmp_path, start_step=4).close()
    assert (tmp_path / METRICS_FILE).read_text() == kept


# Top-1 in percent everywhere. -------------------------------------------------------------------


def _events(directory) -> list:
    """The events of every TensorBoard file in `directory`, file by file (TFRecord framing)."""
    from tensorboardX.proto import event_pb2  # pylint: disable=import-outside-toplevel
    files = []
    for name in sorted(os.listdir(directory)):
        with open(os.path.join(directory, name), "rb") as f:
            data = f.read()
        events, offset = [], 0
        while offset < len(data):
            (length,) = struct.unpack("Q", data[offset:offset + 8])
            events.append(event_pb2.Event.FromString(data[offset + 12:offset + 12 + length]))
            offset += 12 + length + 4
        files.append(events)
    return files


def test_top1_is_in_percent_on_the_console_in_metrics_jsonl_and_in_tensorboard(tmp_path, capsys):
    log = _log(tmp_path, console=True, tensorboard=True)
    log.write("train", 4, {**_TRAIN, "top1": 0.158, "top5": 0.5})
    log.write("eval", 4, {"loss": 2.0, "top1": 0.25, "top5": 1.0, "elapsed_s": 2.0})
    log.close()
    console = capsys.readouterr().out
    assert "loss 1.5000  top-1 15.80 %  top-5 50.00 %" in console
    assert "loss 2.0000  top-1 25.00 %  top-5 100.00 %" in console
    with open(tmp_path / METRICS_FILE) as f:
        records = [json.loads(line) for line in f]
    assert records == log.records
    assert [(r["top1_pct"], r["top5_pct"]) for r in records] == [(pytest.approx(15.8), 50.0), (25.0, 100.0)]
    assert not any("top1" in r or "top5" in r for r in records)
    (events,) = _events(tmp_path / TENSORBOARD_DIR)
    scalars = {(e.step, v.tag): v.simple_value for e in events for v in e.summary.value}
    assert scalars[(4, "train/top1_pct")] == pytest.approx(15.8)
    assert scalars[(4, "eval/top5_pct")] == 100.0 and (4, "train/loss") in scalars
    assert not any(tag.endswith(("/top1", "/top5")) for _, tag in scalars)

    _log(tmp_path, start_step=4, tensorboard=True).close()  # a resume: a new file, the first one kept
    first, resumed = _events(tmp_path / TENSORBOARD_DIR)
    assert first == events
    assert [(e.step, e.file_version) for e in resumed if e.step] == [(5, "brain.Event:2"), (5, "")]
    assert re.fullmatch(r"events\.out\.tfevents\.\d+\.\S+", sorted(os.listdir(tmp_path / TENSORBOARD_DIR))[0])
