"""`python -m train`: flags and presets, one-line errors, SIGTERM and resume, one run per work directory."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

SMALL = ["--model=resnet18:width=0.25,resolution=32", "--dataset=digits", "--batch_size=32"]


def _train(*args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "train", *args], capture_output=True, text=True, timeout=300,
                          **kwargs)


_FLAG_HELPS = """
import json, sys
from absl import flags
from train import main
print(json.dumps({f.name: f.help for f in flags.FLAGS.get_key_flags_for_module(sys.modules["train.main"])}))
"""


def test_every_flag_has_a_one_line_help():
    helps = json.loads(subprocess.run([sys.executable, "-c", _FLAG_HELPS], capture_output=True, text=True,
                                      check=True).stdout)
    listed = _train("--help").stdout
    assert len(helps) >= 25 and {"model", "preset", "workdir", "precision", "process_id"} <= set(helps)
    for name, text in helps.items():
        assert f"--{name}:" in listed or f"--[no]{name}:" in listed, name
        assert text and "\n" not in text and text.rstrip().endswith((".", ")")), name


@pytest.mark.parametrize("args, message", [
    (["--model=resnet99"], "unknown model 'resnet99'; choose one of: alexnet"),
    (["--model=resnet18:wdth=2"], "unknown knob 'wdth' for resnet18; its knobs are: block, depths, width"),
    (["--batch_size=0"], "flag --batch_size=0"),
    (["--learning_rate=nan"], "--learning_rate must be a finite number"),
    (["--optimizer=lamb"], "flag --optimizer=lamb"),
    (["--decay_epochs=1,x"], "--decay_epochs takes numbers of epochs; got 1,x"),
    (["--dataset=nosuch"], "unknown data set 'nosuch'"),
    (["--batch_size=4096"], "batch_size 4096 is larger than digits's 1437 training examples"),
    (["--preset=resnet"], "flag --preset=resnet"),
    (["extra"], "unexpected arguments 'extra'"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, args, message):
    workdir = tmp_path / "work"
    result = _train(*SMALL, "--steps=1", f"--workdir={workdir}", *args)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ") and message in result.stderr, \
        result.stderr
    assert not workdir.exists()


def test_missing_imagenet_points_at_build_md(tmp_path):
    result = _train("--dataset=imagenet2012", f"--data_dir={tmp_path}", "--steps=1")
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "BUILD.md" in result.stderr, result.stderr


def test_workdir_on_a_file_is_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    result = _train(*SMALL, "--steps=1", f"--workdir={tmp_path / 'file'}")
    assert result.returncode == 2 and "exists and is not a directory" in result.stderr


def test_flags_override_the_preset(tmp_path):
    result = _train("--preset=enet_imagenet", *SMALL, "--steps=1", "--log_every=1", f"--workdir={tmp_path}")
    assert result.returncode == 0, result.stderr
    config = json.loads((tmp_path / "config.json").read_text())
    assert (config["schedule"], config["lr_decay"], config["weight_decay_until_epoch"]) == ("exponential", 0.95, 7.0)
    assert (config["model"], config["dataset"], config["batch_size"], config["steps"]) == (
        "resnet18:width=0.25,resolution=32", "digits", 32, 1)
    assert "done: resnet18:width=0.25,resolution=32 on digits, step 1: top-1" in result.stdout


def _losses(workdir) -> dict:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return {(r["split"], r["step"]): r["loss"] for r in map(json.loads, f)}


def test_sigterm_checkpoints_and_the_rerun_resumes_exactly(tmp_path):
    args = [*SMALL, "--steps=120", "--log_every=1", "--eval_every=1000", "--checkpoint_every=50",
            "--learning_rate=0.05"]
    straight = _train(*args, f"--workdir={tmp_path / 'straight'}")
    assert straight.returncode == 0, straight.stderr
    workdir = tmp_path / "stopped"
    child = subprocess.Popen([sys.executable, "-m", "train", *args, f"--workdir={workdir}"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    _wait_for(workdir / "metrics.jsonl", '"step": 5,', child)
    child.send_signal(signal.SIGTERM)
    _, err = child.communicate(timeout=120)
    assert child.returncode == 1 and f"interrupted: the checkpoint is in {workdir}" in err, err
    stopped_at = max(step for split, step in _losses(workdir) if split == "train")
    assert 5 <= stopped_at < 120 and os.path.isdir(workdir / "checkpoints" / str(stopped_at))
    resumed = _train(*args, f"--workdir={workdir}")
    assert resumed.returncode == 0 and f"resumed at step {stopped_at}" in resumed.stdout, resumed.stdout
    assert _losses(workdir) == pytest.approx(_losses(tmp_path / "straight"), rel=1e-5)
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(workdir / "tensorboard"))


def _wait_for(path, text: str, child: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120
    while not path.exists() or text not in path.read_text():
        assert time.monotonic() < deadline and child.poll() is None, child.poll()
        time.sleep(0.05)


def test_one_run_per_workdir_and_sigkill_loses_nothing_checkpointed(tmp_path):
    """A second run is refused while the first holds the lock; after SIGKILL the rerun resumes."""
    args = [*SMALL, "--steps=100000", "--log_every=1", "--eval_every=100000", "--checkpoint_every=20"]
    child = subprocess.Popen([sys.executable, "-m", "train", *args, f"--workdir={tmp_path}"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for(tmp_path / "metrics.jsonl", '"step": 41,', child)
    second = _train(*args, f"--workdir={tmp_path}")
    assert second.returncode == 2 and f"another training run (pid {child.pid}) is writing to" in second.stderr
    child.kill()
    child.wait()
    last = max(int(name) for name in os.listdir(tmp_path / "checkpoints") if name.isdigit())
    assert last >= 40
    args = [arg for arg in args if not arg.startswith("--steps=")]
    rerun = _train(*args, f"--steps={last + 3}", f"--workdir={tmp_path}")
    assert rerun.returncode == 0 and f"resumed at step {last}" in rerun.stdout, rerun.stdout + rerun.stderr
    with open(tmp_path / "metrics.jsonl") as f:
        steps = [r["step"] for r in map(json.loads, f) if r["split"] == "train"]
    assert steps == list(range(1, last + 4))  # each step once: the killed run's later records dropped
