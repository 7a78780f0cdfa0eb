"""Training end to end: accuracy on digits, exact resume, one device equals four, ENet on mock ImageNet."""

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

import models
from train import checkpoint, metrics, optim, steps, trainer
from train.config import TrainConfig

SMALL = "resnet18:width=0.25,resolution=32"  # BatchNorm, residuals, a few ms a step at 32 px
# The smallest network that is still a ResNet: what these tests check (resume, checkpoints,
# divergence, precision) is the trainer's, and each run's cost is tracing and compiling its steps.
TINY = "resnet18:depths=1-1-1-1,width=0.125,resolution=32"


def _config(**overrides) -> TrainConfig:
    # tests/test_train_storage.py's model and optimizer: each file's runs load the steps the other
    # compiled from the run's XLA cache.
    settings = dict(model=TINY, dataset="digits", batch_size=32, steps=12, learning_rate=0.05, log_every=4,
                    eval_every=1000, checkpoint_every=1000, schedule="step", decay_epochs=())
    return TrainConfig(**{**settings, **overrides})


def _leaves(state) -> list[np.ndarray]:
    return [np.asarray(leaf) for leaf in jax.tree.leaves(jax.device_get((state.params, state.batch_stats,
                                                                          state.opt_state)))]


@pytest.mark.slow
def test_digits_reaches_95_percent():
    """A small ResNet on scikit-learn's digits, 8 epochs of cosine SGD, in memory only."""
    result = trainer.fit(_config(model=SMALL, batch_size=64, steps=None, epochs=8, learning_rate=0.1,
                                 schedule="cosine"))
    assert result["eval_top1"] >= 0.95, result
    assert result["step"] == 8 * (1437 // 64) and result["eval_top5"] >= result["eval_top1"]


def test_resume_equals_a_straight_run(tmp_path):
    """12 steps straight equal 5 steps, a stop, and a resume to 12: parameters, statistics, optimizer, metrics."""
    straight = trainer.fit(_config(), str(tmp_path / "straight"))
    stopped = trainer.fit(_config(steps=5), str(tmp_path / "resumed"))
    assert stopped["step"] == 5
    resumed = trainer.fit(_config(), str(tmp_path / "resumed"))
    assert resumed["steps_this_run"] == 7 and resumed["step"] == 12
    for a, b in zip(_leaves(trainer.load_state(_config(), str(tmp_path / "straight"))),
                    _leaves(trainer.load_state(_config(), str(tmp_path / "resumed"))), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert resumed["eval_loss"] == pytest.approx(straight["eval_loss"], rel=1e-5)

    def train_losses(name):
        with open(tmp_path / name / "metrics.jsonl") as f:
            return {r["step"]: r["loss"] for r in map(json.loads, f) if r["split"] == "train"}

    # Each step once (the stopped run logged its last step, 5), and the same data after the resume.
    resumed_losses, straight_losses = train_losses("resumed"), train_losses("straight")
    assert list(resumed_losses) == [4, 5, 8, 12] and list(straight_losses) == [4, 8, 12]
    for step in (4, 12):
        assert resumed_losses[step] == pytest.approx(straight_losses[step], rel=1e-5)

    again = trainer.fit(_config(), str(tmp_path / "resumed"))  # a finished run: nothing to train, same metrics
    assert again["steps_this_run"] == 0 and again["eval_loss"] == pytest.approx(resumed["eval_loss"])
    assert train_losses("resumed") == resumed_losses


_DEVICES_PROGRAM = textwrap.dedent("""
    import sys
    import jax
    jax.config.update("jax_num_cpu_devices", int(sys.argv[1]))
    import numpy as np
    from train import trainer
    from train.config import TrainConfig
    config = TrainConfig(model="resnet18:depths=1-1-1-1,width=0.25,resolution=32", dataset="digits",
                         batch_size=16, steps=2, seed=1, learning_rate=0.05, log_every=1, eval_every=1000, schedule="step",
                         decay_epochs=())
    assert len(jax.devices()) == int(sys.argv[1])
    result = trainer.fit(config, sys.argv[2])
    state = trainer.load_state(config, sys.argv[2])
    leaves = jax.tree.leaves(jax.device_get((state.params, state.batch_stats)))
    np.savez(sys.argv[3], loss=result["train_loss"], eval_loss=result["eval_loss"], *leaves)
""")


@pytest.mark.slow
def test_four_devices_equal_one(tmp_path):
    """Data parallel over 4 forced CPU devices: the same loss, BatchNorm statistics and parameters as 1.

    BatchNorm over each device's 4 images instead of the global 16 would change the first loss
    by percents. Two steps (the second from the first's momentum and statistics), because later
    ones part chaotically: nearest-neighbour digits make ties in the max-pool, and a roundoff of
    another summation order sends a tied gradient elsewhere (1e-5 after 2 steps, 3e-2 after 3).
    Which step first meets a tie depends on the weights drawn: seed 0 meets one in its second step
    (4e-5 of a tensor's scale apart), seeds 1 and 2 agree to 4e-6 after two.
    """
    outputs = {}
    for devices in (1, 4):
        out = tmp_path / f"{devices}.npz"
        subprocess.run([sys.executable, "-c", _DEVICES_PROGRAM, str(devices), str(tmp_path / f"w{devices}"), str(out)],
                       check=True, timeout=300)
        outputs[devices] = np.load(out)
    one, four = outputs[1], outputs[4]
    assert one["loss"] == pytest.approx(float(four["loss"]), rel=1e-4)
    assert one["eval_loss"] == pytest.approx(float(four["eval_loss"]), rel=1e-4)
    names = [name for name in one.files if name.startswith("arr_")]
    assert len(names) > 30
    for name in names:  # to within 1e-4 of each tensor's largest value
        scale = float(np.abs(one[name]).max()) if one[name].size else 1.0
        np.testing.assert_allclose(one[name], four[name], rtol=0, atol=1e-4 * scale, err_msg=name)


_QUEUED_ALL_REDUCES_PROGRAM = textwrap.dedent("""
    import os
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core: XLA starts the fewest threads
    import jax
    jax.config.update("jax_num_cpu_devices", 4)
    import jax.numpy as jnp
    import numpy as np
    from train import distributed
    mesh = distributed.data_mesh()
    rows = np.linspace(-1, 1, 256 * 64, dtype=np.float32).reshape(256, 64)
    x = jax.device_put(rows, distributed.batch_sharded(mesh))
    w = jax.device_put(np.eye(64, dtype=np.float32), distributed.replicated(mesh))
    step = jax.jit(lambda x, w: w - 1e-3 * jnp.mean(jnp.tanh(x @ w), axis=0))  # the mean: an all-reduce
    in_flight = distributed.InFlight()
    for _ in range(2000):
        w = in_flight(step(x, w))
    expected = np.eye(64, dtype=np.float32)
    for _ in range(2000):
        expected = expected - 1e-3 * np.tanh(rows @ expected).mean(axis=0)
    print(np.abs(np.asarray(w) - expected).max())
""")


def test_bounded_dispatch_keeps_xla_cpu_collectives_alive():
    """2,000 all-reducing steps over 4 CPU devices on one core, dispatched through InFlight, all computed.

    Dispatched unbounded, XLA:CPU aborts this program in every try (an all-reduce's rendezvous
    times out with a participant missing): the fault that killed the four-device training test.
    """
    done = subprocess.run([sys.executable, "-c", _QUEUED_ALL_REDUCES_PROGRAM], capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert float(done.stdout.split()[-1]) < 1e-5


@pytest.mark.slow
def test_enet_trains_on_mock_imagenet_through_tf_data():
    """A few ENet steps on tfds's mock imagenet2012: JPEG decode, random crop, flip, 1000 classes."""
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=24, policy=tfds.testing.MockPolicy.USE_CODE):
        result = trainer.fit(TrainConfig(model="enet:resolution=32", dataset="imagenet2012", batch_size=8, steps=3,
                                       log_every=1, learning_rate=0.01))
    assert result["step"] == 3 and result["dataset"] == "imagenet2012"
    assert np.isfinite(result["train_loss"]) and result["train_loss"] > 5  # ~ln(1000) on random labels
    assert 0.0 <= result["eval_top1"] <= result["eval_top5"] <= 1.0


@pytest.fixture(scope="module")
def trained_dir(tmp_path_factory):
    """A work directory after 4 steps, with checkpoints at steps 2 and 4 (copied by each test)."""
    workdir = tmp_path_factory.mktemp("trained")
    trainer.fit(_config(steps=4, checkpoint_every=2), str(workdir))
    return workdir


@pytest.fixture
def workdir(trained_dir, tmp_path):
    """A copy of the trained work directory that the test may change."""
    shutil.copytree(trained_dir, tmp_path / "work")
    return tmp_path / "work"


def test_checkpoint_of_another_run_is_refused_by_name(workdir):
    before = sorted(os.listdir(workdir / "checkpoints"))
    with pytest.raises(trainer.UserError, match=r"is of another run: model 'resnet18:depths=1-1-1-1,width=0.125,"
                                              r"resolution=32' \(this run: 'resnet18:width=0.5,resolution=32'\)"):
        trainer.fit(_config(model="resnet18:width=0.5,resolution=32", steps=6), str(workdir))
    with pytest.raises(trainer.UserError, match=r"batch_size 32 \(this run: 16\)"):
        trainer.fit(_config(batch_size=16, steps=6), str(workdir))
    assert sorted(os.listdir(workdir / "checkpoints")) == before


def _contents(directory) -> dict:
    """Every file under `directory` by relative path, with its bytes."""
    return {str(path.relative_to(directory)): path.read_bytes() for path in directory.rglob("*") if path.is_file()}


def test_eval_only_gives_the_last_evaluation_of_training_and_writes_only_eval_json(workdir, run_program):
    """`python -m train --eval_only` on the newest checkpoint (step 4): the figures training logged at that step."""
    before = _contents(workdir)
    result = run_program("train", f"--model={TINY}", "--dataset=digits", "--batch_size=32", f"--workdir={workdir}",
                         "--eval_only")
    assert result.returncode == 0, result.stderr
    with open(workdir / "metrics.jsonl") as f:
        logged = [r for r in map(json.loads, f) if r["split"] == "eval"][-1]
    written = json.loads((workdir / "eval.json").read_text())
    assert logged["step"] == written["step"] == 4 and written["model"] == TINY and written["split"] == "test"
    assert (written["top1_pct"], written["top5_pct"]) == (logged["top1_pct"], logged["top5_pct"])
    assert written["loss"] == pytest.approx(logged["loss"], rel=1e-6)
    assert result.stdout.splitlines()[-1] == (f"eval: {TINY} on digits, step 4: top-1 {logged['top1_pct']:.2f} %, "
                                              f"top-5 {logged['top5_pct']:.2f} %; written to {workdir / 'eval.json'}")
    after = _contents(workdir)
    assert after.pop("eval.json") and after == before  # no checkpoint, metric or lock changed
    from_python = trainer.evaluate_checkpoint(_config(), str(workdir))  # fractions, as fit returns them
    assert from_python["step"] == 4 and metrics.percent(from_python["eval_top1"]) == logged["top1_pct"]


def test_eval_only_refuses_the_checkpoint_of_another_model_in_one_line(workdir, run_program):
    before = _contents(workdir)
    result = run_program("train", "--model=resnet18:width=0.5,resolution=32", "--dataset=digits", "--batch_size=32",
                         f"--workdir={workdir}", "--eval_only")
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert (f"is of another run: model '{TINY}' (this run: 'resnet18:width=0.5,resolution=32')"
            in result.stderr), result.stderr
    assert _contents(workdir) == before


def _corrupt(step_dir) -> None:
    """Overwrites every file of a checkpoint with garbage of the same size."""
    for root, _, names in os.walk(step_dir):
        for name in names:
            path = os.path.join(root, name)
            size = os.path.getsize(path)
            with open(path, "wb") as f:
                f.write(b"\xff" * max(size, 1))


def test_a_corrupt_newest_checkpoint_falls_back_to_the_one_before(workdir, caplog):
    assert checkpoint.Checkpoints(str(workdir / "checkpoints"), keep=3).steps() == [2, 4]
    _corrupt(workdir / "checkpoints" / "4")
    result = trainer.fit(_config(steps=6, checkpoint_every=2), str(workdir))
    assert result["steps_this_run"] == 4  # from step 2
    assert "checkpoint at step 4" in caplog.text and "resuming from step 2" in caplog.text


def test_no_readable_checkpoint_is_one_clear_error(workdir):
    for step in ("2", "4"):
        _corrupt(workdir / "checkpoints" / step)
    with pytest.raises(trainer.UserError, match=r"no readable checkpoint in .*checkpoints: the newest \(step 4\)"):
        trainer.fit(_config(steps=6), str(workdir))


def test_a_nan_loss_stops_at_its_step_and_keeps_the_good_checkpoint(tmp_path):
    with pytest.raises(trainer.Diverged) as raised:
        trainer.fit(_config(steps=40, checkpoint_every=2, log_every=1, learning_rate=1e3), str(tmp_path))
    match = re.fullmatch(r"(the loss became nan|the loss became inf|the parameters became infinite or NaN) at step (\d+); stopped, the last good checkpoint \(step (\d+)\) "
                         r"is kept; lower --learning_rate or add --warmup_epochs", str(raised.value))
    assert match, str(raised.value)
    bad, kept = int(match[2]), int(match[3])
    assert kept < bad <= kept + 2  # a checkpoint every 2 steps: none after the bad step
    assert checkpoint.Checkpoints(str(tmp_path / "checkpoints"), keep=3).steps()[-1] == kept
    state = trainer.load_state(_config(steps=40), str(tmp_path))
    assert int(state.step) == kept and all(np.all(np.isfinite(leaf)) for leaf in _leaves(state))


def test_bfloat16_computes_in_bfloat16_and_keeps_float32_state(tmp_path):
    """bfloat16 compute, float32 parameters, statistics and optimizer state; the loss stays near float32's.

    The first step's loss is the same weights' forward pass in both precisions (within a few 1e-3
    for seeds 0 to 2); from the second step on each precision follows its own gradients, and
    the losses part by percents.
    """
    results = {p: trainer.fit(_config(steps=1, precision=p), str(tmp_path / p)) for p in ("float32", "bfloat16")}
    assert results["bfloat16"]["train_loss"] == pytest.approx(results["float32"]["train_loss"], rel=0.01)
    assert results["bfloat16"]["train_loss"] != results["float32"]["train_loss"]  # it did compute in bfloat16
    state = trainer.load_state(_config(steps=1, precision="bfloat16"), str(tmp_path / "bfloat16"))
    dtypes = {leaf.dtype for leaf in jax.tree.leaves((state.params, state.batch_stats, state.opt_state))
              if np.issubdtype(leaf.dtype, np.floating)}
    assert dtypes == {np.dtype("float32")}


def test_the_initial_state_holds_what_only_training_builds():
    """Inception-v3's auxiliary head exists only with train=True: the state must have its parameters."""
    module = models.get("inception_v3", aux_head=True, num_classes=10)
    tx = optim.optimizer(_config(), steps_per_epoch=10)
    state = jax.eval_shape(lambda: steps.init_state(module, tx, (1, 299, 299, 3), 0))
    assert "AuxLogits" in state.params and "AuxLogits" in state.opt_state[1][0].trace
