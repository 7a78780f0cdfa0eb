"""The synthetic task: deterministic examples, disjoint splits, one scene at every resolution, settings strings."""

import hashlib
import subprocess
import sys

import numpy as np
import pytest

from core.errors import UserError
from train import synthetic


def test_an_example_is_a_pure_function_of_seed_split_and_index():
    task = synthetic.Task()
    first, label = synthetic.example(task, "train", 7, 32)
    again, label_again = synthetic.example(task, "train", 7, 32)
    assert first.dtype == np.uint8 and first.shape == (32, 32, 3) and 0 <= label < task.classes
    assert np.array_equal(first, again) and label == label_again
    other_seed, _ = synthetic.example(synthetic.Task(seed=1), "train", 7, 32)
    assert not np.array_equal(first, other_seed)
    images, labels = synthetic.examples(task, "train", [3, 7], 32)
    assert np.array_equal(images[1], first) and labels[1] == label


def test_splits_never_share_an_example():
    task = synthetic.Task()
    digests = {split: {hashlib.sha1(image.tobytes()).hexdigest()
                       for image in synthetic.examples(task, split, range(300), 16)[0]} for split in synthetic.SPLITS}
    assert len(digests["train"]) == len(digests["test"]) == 300
    assert not digests["train"] & digests["test"]


def test_two_resolutions_render_the_same_scene():
    task = synthetic.Task(noise=0.0)
    small, label = synthetic.example(task, "test", 5, 32)
    large, label_large = synthetic.example(task, "test", 5, 128)
    assert label == label_large
    pooled = large.reshape(32, 4, 32, 4, 3).mean(axis=(1, 3))
    # Averaging the large image's 4x4 blocks gives the small one but for edges and fine texture.
    assert np.median(np.abs(pooled - small.astype(float))) < 12
    assert np.abs(pooled - small.astype(float)).mean() < np.abs(pooled - pooled.mean()).mean() / 2


def test_every_class_is_drawn_and_tells_shape_texture_and_count():
    task = synthetic.Task(classes=synthetic.MAX_CLASSES)
    labels = synthetic.examples(task, "train", range(800), 8)[1]
    assert set(labels.tolist()) == set(range(synthetic.MAX_CLASSES))
    assert len({task.class_of(c) for c in range(task.classes)}) == task.classes
    assert task.class_of(0) == ("disk", "plain", 1) and task.class_of(39) == ("ring", "rings", 2)


def test_noise_and_clutter_change_the_image_not_the_label():
    plain, label = synthetic.example(synthetic.Task(noise=0.0), "train", 1, 32)
    noisy, noisy_label = synthetic.example(synthetic.Task(noise=0.5), "train", 1, 32)
    assert label == noisy_label and np.abs(noisy.astype(float) - plain).mean() > 20


def test_settings_strings_are_canonical():
    assert str(synthetic.parse("synthetic")) == "synthetic"
    task = synthetic.parse(" synthetic: noise=0.50 , classes=20 ")
    assert (task.classes, task.noise) == (20, 0.5) and str(task) == "synthetic:classes=20,noise=0.5"
    assert synthetic.parse(str(task)) == task
    assert str(synthetic.parse("synthetic:noise=0.1")) == "synthetic"  # the default is left out
    assert synthetic.is_synthetic("synthetic:classes=4") and not synthetic.is_synthetic("synthetic_x")


@pytest.mark.parametrize("text, message", [
    ("synthetic:classes=1", "classes must be 2 to 40"),
    ("synthetic:classes=2.5", "classes must be an integer; got '2.5'"),
    ("synthetic:noise=abc", "noise must be a number; got 'abc'"),
    ("synthetic:noise=nan", "every setting must be a finite number"),
    ("synthetic:noise=-1", "noise and background must be >= 0"),
    ("synthetic:colour=red", "unknown setting 'colour'; the synthetic task's settings are: classes, noise"),
    ("synthetic:classes", "'classes' is not knob=value"),
    ("synthetic:classes=4,classes=5", "classes is given twice"),
    ("synthetic:min_scale=0.4,max_scale=0.3", "min_scale <= max_scale"),
    ("mnist:classes=4", "is not the synthetic task"),
])
def test_bad_settings_are_one_line_user_errors(text, message):
    with pytest.raises(UserError, match=message) as raised:
        synthetic.parse(text)
    assert "\n" not in str(raised.value)


def test_the_task_imports_neither_tensorflow_nor_jax():
    code = ("import sys; from train import synthetic; synthetic.examples(synthetic.Task(), 'train', range(2), 16); "
            "print(sorted(m for m in ('tensorflow', 'jax') if m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "[]\n"


def test_training_batches_are_new_examples_disjoint_across_processes_and_resume_exactly():
    from train import input_pipeline as ip
    name = "synthetic:classes=4"
    info = ip.dataset_info(name)
    assert (info.name, info.num_classes, info.eval_examples) == ("synthetic:classes=4", 4, 2000)
    hosts = [ip.train_batches(name, batch_size=4, resolution=16, seed=0, process_index=p, process_count=2)
             for p in range(2)]
    first = [next(h) for h in hosts]
    assert not np.array_equal(first[0]["image"], first[1]["image"])
    expected, _ = synthetic.examples(synthetic.parse(name), "train", range(4, 8), 16)
    assert np.array_equal(first[1]["image"], expected)  # global batch 0: host 0 takes 0..3, host 1 takes 4..7
    position = hosts[0].position()
    after = next(hosts[0])
    resumed = ip.train_batches(name, batch_size=4, resolution=16, seed=0, position=position, process_index=0,
                               process_count=2)
    assert np.array_equal(next(resumed)["image"], after["image"])


def test_evaluation_reads_the_whole_test_split_once_padded():
    from train import input_pipeline as ip
    name = "synthetic:test_examples=10"
    batches = list(ip.eval_batches(name, batch_size=4, resolution=16))
    assert [int(b["mask"].sum()) for b in batches] == [4, 4, 2]
    images, labels = synthetic.examples(synthetic.parse(name), "test", range(10), 16)
    assert np.array_equal(np.concatenate([b["image"][b["mask"]] for b in batches]), images)
    assert np.array_equal(np.concatenate([b["label"][b["mask"]] for b in batches]), labels)


def test_the_train_cli_refuses_a_bad_setting_in_one_line(run_program):
    result = run_program("train", "--dataset=synthetic:classes=99", "--steps=1")
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        "error: synthetic:classes=99: classes must be 2 to 40"]


@pytest.mark.slow
def test_a_small_network_learns_the_task_above_chance():
    from train import config as config_lib
    from train import trainer
    config = config_lib.TrainConfig(model="resnet18:depths=1-1-1-1,width=0.25,resolution=32",
                                    dataset="synthetic:classes=4", batch_size=32, steps=60, epochs=None,
                                    learning_rate=0.05, log_every=60, checkpoint_every=60, precise_bn_images=256)
    result = trainer.fit(config)
    assert result["dataset"] == "synthetic:classes=4"
    assert result["eval_top1"] > 0.35  # chance is 0.25


def test_painting_inside_each_objects_window_loses_nothing(monkeypatch):
    # Every object is painted on a window around it; windows the size of the image draw the same.
    # One size of object, so the window is no larger than the farthest corner needs (rotated squares).
    task = synthetic.Task(classes=synthetic.MAX_CLASSES, clutter=0, min_scale=0.2, max_scale=0.2)
    windowed = synthetic.examples(task, "train", range(40), 48)[0]
    monkeypatch.setattr(synthetic, "_REACH", 100.0)
    assert np.array_equal(synthetic.examples(task, "train", range(40), 48)[0], windowed)
