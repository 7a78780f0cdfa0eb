"""`python -m train`: flags and presets, one-line errors, SIGTERM and resume, one run per work directory."""

import dataclasses
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time

import pytest

from core import cli
from train import config as config_lib

SMALL = ["--model=resnet18:width=0.25,resolution=32", "--dataset=digits", "--batch_size=32"]


def _train(*args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "train", *args], capture_output=True, text=True, timeout=300,
                          **kwargs)


def _start(*args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "train", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


@pytest.mark.parametrize("args, message", [
    (["--model=resnet99"], "unknown model 'resnet99'; choose one of: alexnet"),
    (["--model=resnet18:wdth=2"], "unknown knob 'wdth' for resnet18; its knobs are: block, depths, width"),
    (["--batch_size=0"], "flag --batch_size=0"),
    (["--learning_rate=nan"], "--learning_rate must be a finite number"),
    (["--optimizer=lamb"], "flag --optimizer=lamb"),
    (["--decay_epochs=1,x"], "--decay_epochs takes finite numbers; got 1,x"),
    (["--dataset=nosuch"], "unknown data set 'nosuch'"),
    (["--batch_size=4096"], "batch_size 4096 is larger than digits's 1437 training examples"),
    (["--preset=resnet"], "flag --preset=resnet"),
    (["extra"], "unexpected arguments 'extra'"),
    (["--model="], "a variant is a network name with optional knobs"),
    (["--model=resnet18:width=nan"], "resnet18: width must be a number; got 'nan'"),
    (["--model=resnet18:width=-1"], "width must be a positive finite number; got -1.0"),
    (["--model=resnet18:resolution=0"], "resnet18 needs a resolution from 32 to 4096 pixels; got 0"),
    (["--model=resnet18:resolution=100000"], "resnet18 needs a resolution from 32 to 4096 pixels; got 100000"),
    (["--model=resnet18:depths=1-1"], "depths must be 4 positive integers, one per stage; got (1, 1)"),
    (["--model=resnet18:num_classes=7"], "has 7 classes but the data set has 10; drop num_classes from --model"),
    (["--epochs=nan"], "--epochs must be a finite number"),
    (["--epochs=-1"], "flag --epochs=-1"),
    (["--steps=0"], "flag --steps=0"),
    (["--steps=1.5"], "flag --steps=1.5"),
    (["--batch_size=-5"], "flag --batch_size=-5"),
    (["--momentum=1.5"], "flag --momentum=1.5"),
    (["--label_smoothing=1"], "flag --label_smoothing=1"),
    (["--weight_decay=-1"], "flag --weight_decay=-1"),
    (["--warmup_epochs=inf"], "--warmup_epochs must be a finite number"),
    (["--lr_decay=nan"], "--lr_decay must be a finite number"),
    (["--decay_epochs=nan"], "--decay_epochs takes finite numbers; got nan"),
    (["--seed=-1"], "seed must be 0 or more; got -1"),
    (["--log_every=0"], "flag --log_every=0"),
    (["--checkpoint_every=0"], "flag --checkpoint_every=0"),
    (["--keep_checkpoints=0"], "flag --keep_checkpoints=0"),
    (["--precise_bn_images=-1"], "flag --precise_bn_images=-1"),
    (["--precision=float16"], "flag --precision=float16"),
    (["--schedule=linear"], "flag --schedule=linear"),
    (["--dataset=huggingface:cifar10"], "data set 'huggingface:cifar10' needs huggingface_hub, which is not installed"),
    (["--dataset=cifar10", "--data_dir=/nonexistent"], "cifar10 is not prepared in /nonexistent"),
    (["--num_processes=2"], "a multi-host run needs all of --coordinator_address, --num_processes and --process_id"),
    (["--process_id=3", "--num_processes=2", "--coordinator_address=localhost:1"],
     "--process_id=3 must be below --num_processes=2"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, run_program, args, message):
    workdir = tmp_path / "work"
    result = run_program("train", *SMALL, "--steps=1", f"--workdir={workdir}", *args)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ") and message in result.stderr, \
        result.stderr
    assert not workdir.exists()


def test_eval_only_without_a_checkpoint_is_one_line_exit_2_and_creates_nothing(tmp_path, run_program):
    never_trained, empty = tmp_path / "never_trained", tmp_path / "empty"
    (empty / "checkpoints").mkdir(parents=True)
    for workdir in (never_trained, empty):
        result = run_program("train", *SMALL, f"--workdir={workdir}", "--eval_only")
        assert result.returncode == 2, result.stderr
        assert result.stderr == (f"error: no checkpoint in {workdir}; train there first, or set --workdir to a "
                                 "trained run's directory\n"), result.stderr
    assert not never_trained.exists() and os.listdir(empty / "checkpoints") == []
    without = run_program("train", *SMALL, "--eval_only")
    assert without.returncode == 2 and without.stderr == ("error: --eval_only evaluates the newest checkpoint in "
                                                          "--workdir; set --workdir\n"), without.stderr


# Training then evaluating in one process (one JAX start), on two forced CPU devices.
_TRAIN_THEN_EVALUATE = ("import sys\nfrom core import cli\nfrom train import main\n"
                        "for extra in (['--steps=2', '--notensorboard'], ['--eval_only']):\n"
                        "    argv = ['train', *sys.argv[1:], *extra]\n"
                        "    assert cli.call(main.main, main.FLAGS, argv, safe_stops=True) == 0\n")


@pytest.mark.slow  # a training compiled afresh on forced devices in a child process, like the other multi-device tests
def test_eval_only_evaluates_a_run_of_two_devices_on_two_and_on_one(tmp_path, run_program):
    """On the two devices it trained on, the figures training logged; on one, the same checkpoint within an image."""
    args = ["--model=resnet18:depths=1-1-1-1,width=0.125,resolution=32", "--dataset=digits", "--batch_size=32",
            "--precise_bn_images=128", f"--workdir={tmp_path}"]
    child = subprocess.run([sys.executable, "-c", _TRAIN_THEN_EVALUATE, *args], capture_output=True, text=True,
                           timeout=300, env={**os.environ, "JAX_NUM_CPU_DEVICES": "2"})
    assert child.returncode == 0 and "on 2 cpu device(s)" in child.stdout, child.stdout + child.stderr
    with open(tmp_path / "metrics.jsonl") as f:
        logged = [r for r in map(json.loads, f) if r["split"] == "eval"][-1]
    two = json.loads((tmp_path / "eval.json").read_text())
    assert logged["step"] == two["step"] == 2 and (two["top1_pct"], two["top5_pct"]) == (logged["top1_pct"],
                                                                                          logged["top5_pct"])
    one = run_program("train", *args, "--eval_only")
    assert one.returncode == 0 and one.stdout.splitlines()[-1].startswith(
        "eval: resnet18:depths=1-1-1-1,width=0.125,resolution=32 on digits, step 2: top-1 "), one.stdout + one.stderr
    # Another summation order (over one device, not two) may move a borderline image.
    assert json.loads((tmp_path / "eval.json").read_text())["top1_pct"] == pytest.approx(logged["top1_pct"],
                                                                                         abs=100 / 360 + 1e-9)


def test_missing_imagenet_points_at_build_md(tmp_path, run_program):
    result = run_program("train", "--dataset=imagenet2012", f"--data_dir={tmp_path}", "--steps=1")
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "BUILD.md" in result.stderr, result.stderr


def test_workdir_on_a_file_is_refused(tmp_path, run_program):
    (tmp_path / "file").write_text("x")
    result = run_program("train", *SMALL, "--steps=1", f"--workdir={tmp_path / 'file'}")
    assert result.returncode == 2 and "exists and is not a directory" in result.stderr
    below = run_program("train", *SMALL, "--steps=1", f"--workdir={tmp_path / 'file' / 'sub'}")
    assert below.returncode == 2 and below.stderr == (f"error: cannot create --workdir={tmp_path / 'file' / 'sub'}: "
                                                      "Not a directory; choose a writable location\n"), below.stderr


def test_a_run_refused_by_the_checkpoints_there_leaves_the_work_directory_as_it_was(tmp_path, run_program):
    first = run_program("train", *SMALL, "--steps=2", f"--workdir={tmp_path}")
    assert first.returncode == 0, first.stderr
    before = (tmp_path / "config.json").read_text()
    refused = run_program("train", *SMALL, "--steps=2", "--seed=7", f"--workdir={tmp_path}")
    assert refused.returncode == 2 and "is of another run: seed 0 (this run: 7)" in refused.stderr, refused.stderr
    assert (tmp_path / "config.json").read_text() == before and '"seed": 0' in before
    assert "--seed" not in (tmp_path / "flags.txt").read_text()  # the refused run's flags are not recorded


def test_flags_override_the_preset(tmp_path, run_program):
    result = run_program("train", "--preset=enet_imagenet", *SMALL, "--steps=1", "--log_every=1",
                         f"--workdir={tmp_path}")
    assert result.returncode == 0, result.stderr
    config = json.loads((tmp_path / "config.json").read_text())
    assert (config["schedule"], config["lr_decay"], config["weight_decay_until_epoch"]) == ("exponential", 0.95, 7.0)
    assert (config["model"], config["dataset"], config["batch_size"], config["steps"]) == (
        "resnet18:width=0.25,resolution=32", "digits", 32, 1)
    assert "done: resnet18:width=0.25,resolution=32 on digits, step 1: top-1" in result.stdout
    # The preset and the flags set over it, not every flag's default: those would override the preset.
    assert _flag_lines(tmp_path) == ["--preset=enet_imagenet", *SMALL[:2], f"--workdir={tmp_path}", SMALL[2],
                                     "--steps=1", "--log_every=1"]


def _flag_lines(workdir) -> list[str]:
    """The flags in a work directory's flags.txt, its comment left out."""
    return [line for line in (workdir / "flags.txt").read_text().splitlines() if not line.startswith("#")]


def test_every_setting_has_a_flag_with_its_default_and_help(run_program):
    """A flag per TrainConfig field, made from it: its default and help cannot drift from the field's."""
    module = run_program.module("train")
    module.FLAGS.unparse_flags()
    module.FLAGS(["train"])
    parsed = cli.config_kwargs(config_lib.TrainConfig, module.FLAGS)
    # (an enum's help starts with its <choices>)
    for field in dataclasses.fields(config_lib.TrainConfig):
        flag = module.FLAGS[field.name]
        assert parsed[field.name] == field.default and flag.help.endswith(field.metadata["help"]), field.name
    assert module.config_from_flags() == config_lib.TrainConfig()


def test_an_unknown_data_set_is_refused_before_jax_or_tensorflow_start():
    program = ("import sys\nfrom core import cli\nfrom train import main\n"
               "status = cli.call(main.main, main.FLAGS, ['train', '--dataset=nosuch', '--steps=1'])\n"
               "print(status, sorted(name for name in ('jax', 'tensorflow') if name in sys.modules))")
    child = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=120)
    assert child.stdout == "2 []\n" and child.stderr.startswith("error: unknown data set 'nosuch'"), child


@pytest.mark.slow
def test_flags_txt_repeats_the_run_through_flagfile(tmp_path):
    """flags.txt lists the flags given; `--flagfile=<workdir>/flags.txt` from elsewhere resumes the same run."""
    workdir = tmp_path / "work"
    first = _train(*SMALL, "--steps=2", "--notensorboard", "--decay_epochs=1,2.5", f"--workdir={workdir}")
    assert first.returncode == 0, first.stderr
    written, config = (workdir / "flags.txt").read_text(), (workdir / "config.json").read_text()
    assert _flag_lines(workdir) == [*SMALL[:2], f"--workdir={workdir}", SMALL[2], "--steps=2",
                                    "--decay_epochs=1,2.5", "--notensorboard"]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    again = _train(f"--flagfile={workdir / 'flags.txt'}", cwd=elsewhere)
    assert again.returncode == 0 and "resumed at step 2" in again.stdout, again.stdout + again.stderr
    assert "done: resnet18:width=0.25,resolution=32 on digits, step 2" in again.stdout
    assert (workdir / "flags.txt").read_text() == written and (workdir / "config.json").read_text() == config
    assert _train_steps(workdir) == [2] and not os.listdir(elsewhere)


def _wait_for(path, text: str, child: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120
    while not path.exists() or text not in path.read_text():
        assert time.monotonic() < deadline and child.poll() is None, child.poll()
        time.sleep(0.05)


def _train_steps(workdir) -> list[int]:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [r["step"] for r in map(json.loads, f) if r["split"] == "train"]


@pytest.mark.slow
def test_one_run_per_workdir_sigkill_and_sigterm_lose_nothing(tmp_path):
    """A second run is refused while one holds the work directory; after SIGKILL a rerun resumes
    from the last checkpoint; SIGTERM checkpoints the step it stopped at; each step is logged once."""
    args = [*SMALL, "--log_every=1", "--eval_every=100000", "--checkpoint_every=20", f"--workdir={tmp_path}"]
    child = _start(*args, "--steps=100000")
    _wait_for(tmp_path / "metrics.jsonl", '"step": 41,', child)
    second = _train(*args, "--steps=100000")
    assert second.returncode == 2 and f"another training run (pid {child.pid}) is writing to" in second.stderr
    child.kill()
    child.wait()
    killed_at = max(int(name) for name in os.listdir(tmp_path / "checkpoints") if name.isdigit())
    assert killed_at >= 40

    child = _start(*args, "--steps=100000")
    assert child.stdout.readline().startswith("train: ")  # the first line, before JAX starts
    header = child.stdout.readline()  # printed once the killed run's later records are dropped
    assert f"resumed at step {killed_at}" in header, header
    _wait_for(tmp_path / "metrics.jsonl", f'"step": {killed_at + 5},', child)
    child.send_signal(signal.SIGTERM)
    _, err = child.communicate(timeout=120)
    assert child.returncode == 128 + signal.SIGTERM and f"interrupted: the checkpoints are in {tmp_path}" in err, err
    stopped_at = _train_steps(tmp_path)[-1]
    assert stopped_at >= killed_at + 5 and os.path.isdir(tmp_path / "checkpoints" / str(stopped_at))

    rerun = _train(*args, f"--steps={stopped_at + 3}")
    assert rerun.returncode == 0 and f"resumed at step {stopped_at}" in rerun.stdout, rerun.stdout + rerun.stderr
    assert _train_steps(tmp_path) == list(range(1, stopped_at + 4))  # the killed run's later records dropped
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(tmp_path / "tensorboard"))


@pytest.mark.slow
def test_two_hosts_of_two_devices_train_as_one_run(tmp_path):
    """Two processes joined by jax.distributed (gloo on CPUs), two devices each, one work directory."""
    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        port = probe.getsockname()[1]
    args = ["--model=resnet18:depths=1-1-1-1,width=0.25,resolution=32", "--dataset=digits", "--batch_size=32",
            "--steps=6", "--log_every=3", "--checkpoint_every=3", f"--workdir={tmp_path}",
            f"--coordinator_address=localhost:{port}", "--num_processes=2"]
    env = {**os.environ, "JAX_NUM_CPU_DEVICES": "2", "PYTHONFAULTHANDLER": "1"}  # SIGABRT: every thread's stack
    # Each host writes to files, not pipes: a host blocked on a full pipe that nobody reads yet stops
    # joining the collectives, and the other host waits for it forever.
    logs = [(tmp_path.parent / f"{tmp_path.name}-host{i}.out", tmp_path.parent / f"{tmp_path.name}-host{i}.err")
            for i in range(2)]
    hosts = []
    for i, (out, err) in enumerate(logs):
        with open(out, "w") as stdout, open(err, "w") as stderr:
            hosts.append(subprocess.Popen([sys.executable, "-m", "train", *args, f"--process_id={i}"], stdout=stdout,
                                          stderr=stderr, text=True, env=env))
    deadline = time.monotonic() + 300
    try:
        for host in hosts:
            host.wait(timeout=max(deadline - time.monotonic(), 1))
    except subprocess.TimeoutExpired:
        for host in hosts:  # a hang: each host's Python stacks to its stderr, for the failure message
            host.send_signal(signal.SIGABRT)
        for host in hosts:
            host.wait(timeout=30)
    finally:
        for host in hosts:
            host.kill()
    outputs = [(out.read_text(), err.read_text()[-6000:]) for out, err in logs]
    assert [host.returncode for host in hosts] == [0, 0], outputs
    assert "on 4 cpu device(s)" in outputs[0][0] and "done:" in outputs[0][0]
    assert "[train]" not in outputs[1][0] and "done:" not in outputs[1][0]  # process 0 alone reports
    with open(tmp_path / "metrics.jsonl") as f:
        records = [json.loads(line) for line in f]
    assert [r["step"] for r in records if r["split"] == "train"] == [3, 6]
    assert sorted(int(name) for name in os.listdir(tmp_path / "checkpoints") if name.isdigit()) == [3, 6]
    assert not [line for line in _flag_lines(tmp_path) if "process" in line or "coordinator" in line]


# The message and the kept checkpoint are checked by tests/test_train.py's divergence test, and a
# UserError as one line by every bad-input test here: the whole CLI run is in the slow set.
@pytest.mark.slow
def test_a_diverging_run_is_one_line_naming_the_step(tmp_path, run_program):
    result = run_program("train", *SMALL, "--steps=40", "--learning_rate=1000", "--log_every=1", "--checkpoint_every=2",
                    f"--workdir={tmp_path}")
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert re.fullmatch(r"error: the (loss became (nan|inf)|parameters became infinite or NaN) at step \d+; stopped, "
                        r"the last good checkpoint \(step \d+\) is kept; lower --learning_rate or add --warmup_epochs\n",
                        result.stderr), result.stderr


@pytest.mark.slow
def test_out_of_memory_is_one_line_naming_the_fix(tmp_path):
    """ResNet-18 at 224 px, batch 512 (14.7 GB for the step), under a 4 GiB address-space limit."""
    command = (f"ulimit -v {4 * 2**20} && exec {shlex.quote(sys.executable)} -m train --model=resnet18:resolution=224 "
               f"--dataset=digits --batch_size=512 --steps=2 --workdir={shlex.quote(str(tmp_path))}")
    result = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("error: out of memory training resnet18 at batch 512 "
                                    "(512 per device on 1): use a smaller --batch_size"), result.stderr
    assert os.listdir(tmp_path / "checkpoints") == []
