"""The lessons: the runner (pages, index, selection, failures, bad input), each lesson as a script, the checkers."""

import functools
import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

import models
from lessons import __main__ as runner
from lessons.checks import costs, latency, memory
from measure import cost
from measure.analysis import fitting

LESSON_FILES = sorted(path for path in pathlib.Path(runner.LESSONS_DIR).iterdir()
                      if runner.LESSON_FILE.fullmatch(path.name))
FIGURE_LESSON = """# %% [markdown]
# # A lesson with a figure
# %%
import os
import lessons
from measure.analysis import plotting
fig, ax = plotting.axes("squares", "x [ms]", "y [MB]")
ax.plot([1, 2, 3], [1, 4, 9])
lessons.show(fig)
print("smoke:", os.environ.get("LESSONS_SMOKE"))
"""
FAILING_LESSON = """# %% [markdown]
# # A lesson that raises
# %%
raise ValueError("broken on purpose")
"""
SLOW_LESSON = """# %% [markdown]
# # A lesson that never ends
# %%
import time
time.sleep(60)
"""


def _lessons_dir(tmp_path, **sources) -> pathlib.Path:
    """A folder of lessons, one file per keyword (its name) and source."""
    folder = tmp_path / "lessons"
    folder.mkdir()
    for name, source in sources.items():
        (folder / f"{name}.py").write_text(source)
    return folder


def _images(page: pathlib.Path) -> int:
    """How many PNG outputs a page embeds (its style sheet's own data URLs are not sources of images)."""
    return page.read_text().count('src="data:image/png;base64,')


def test_the_runner_executes_a_lesson_into_a_page_with_its_figures_and_an_index(tmp_path, capsys):
    out = tmp_path / "html"
    assert runner.call(["lessons", "costs", f"--out={out}", "--smoke"]) == 0
    page = (out / "01_costs.html").read_text()
    assert _images(out / "01_costs.html") == 5  # every figure of lesson 1, embedded
    assert "Not yet. Hint:" in page  # the exercises ran, their answers left unfinished
    runs = json.loads((out / runner.RUNS_NAME).read_text())
    assert set(runs) == {"01_costs"} and runs["01_costs"]["smoke"] is True and runs["01_costs"]["failure"] is None
    index = (out / runner.INDEX_NAME).read_text()
    assert 'href="01_costs.html"' in index and "What a network costs" in index and "(smoke settings)" in index
    assert index.count("(not run yet)") == len(LESSON_FILES) - 1
    assert "01_costs: ok in" in capsys.readouterr().err


def test_a_failing_lesson_gets_its_page_and_the_others_still_run(tmp_path, capsys):
    folder = _lessons_dir(tmp_path, **{"01_raises": FAILING_LESSON, "02_figure": FIGURE_LESSON})
    out = tmp_path / "html"
    assert runner.call(["lessons", f"--lessons_dir={folder}", f"--out={out}"]) == 1
    err = capsys.readouterr().err
    assert err.splitlines()[-1].startswith("failed: 01_raises ")
    failed = (out / "01_raises.html").read_text()
    assert "This lesson failed:" in failed and "broken on purpose" in failed and "Traceback" in failed
    assert _images(out / "02_figure.html") == 1 and "smoke: None" in (out / "02_figure.html").read_text()
    runs = json.loads((out / runner.RUNS_NAME).read_text())
    assert runs["01_raises"]["failure"] == "ValueError: broken on purpose" and runs["02_figure"]["failure"] is None
    index = (out / runner.INDEX_NAME).read_text()
    assert "<b>failed</b>: ValueError: broken on purpose" in index and 'href="02_figure.html"' in index


def test_a_name_runs_one_lesson_and_the_index_keeps_the_others(tmp_path):
    folder = _lessons_dir(tmp_path, **{"01_raises": FAILING_LESSON, "02_figure": FIGURE_LESSON})
    out = tmp_path / "html"
    assert runner.call(["lessons", "figure", f"--lessons_dir={folder}", f"--out={out}", "--smoke"]) == 0
    assert sorted(os.listdir(out)) == [".lock", "02_figure.html", runner.INDEX_NAME, runner.RUNS_NAME]
    assert "smoke: 1" in (out / "02_figure.html").read_text()  # --smoke reaches the kernel
    index = (out / runner.INDEX_NAME).read_text()
    assert "01_raises</td><td>(not run yet)" in index and 'href="02_figure.html"' in index


def test_names_select_lessons_by_name_topic_or_number():
    lessons = [runner.Lesson("01_costs", "/l/01_costs.py"), runner.Lesson("02_time", "/l/02_time.py")]
    assert runner.select(lessons, []) == lessons
    for name in ("01_costs", "costs", "01", "01_costs.py"):
        assert runner.select(lessons, [name]) == lessons[:1]
    assert runner.select(lessons, ["time", "01", "costs"]) == [lessons[1], lessons[0]]
    assert runner.split_arguments(["lessons", "01", "--out=x", "time", "--smoke"]) == (
        ["01", "time"], ["lessons", "--out=x", "--smoke"])


def test_a_cell_past_its_timeout_fails_its_lesson(tmp_path):
    folder = _lessons_dir(tmp_path, **{"01_sleeps": SLOW_LESSON})
    out = tmp_path / "html"
    assert runner.call(["lessons", f"--lessons_dir={folder}", f"--out={out}", "--cell_timeout=2"]) == 1
    runs = json.loads((out / runner.RUNS_NAME).read_text())
    assert "timed out" in runs["01_sleeps"]["failure"] and runs["01_sleeps"]["seconds"] < 30
    assert "This lesson failed:" in (out / "01_sleeps.html").read_text()


@pytest.mark.parametrize("arguments, message", [
    (["nope"], "error: unknown lesson 'nope'; choose from: 01_"),
    (["01", "--out={file}"], "exists and is not a directory; choose a directory"),
    (["--lessons_dir={missing}"], "is not a folder; give the folder holding NN_name.py lessons"),
    (["--lessons_dir={empty}"], "no lessons (NN_name.py files) in"),
    (["--out={malformed}"], "is not a lessons run record (not an object); delete it"),
    (["--cell_timeout=0"], "error: flag --cell_timeout=0"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, arguments, message):
    places = {"file": tmp_path / "a_file", "missing": tmp_path / "missing", "empty": tmp_path / "empty",
              "malformed": tmp_path / "malformed"}
    places["file"].write_text("")
    places["empty"].mkdir()
    places["malformed"].mkdir()
    (places["malformed"] / runner.RUNS_NAME).write_text("[1, 2]")
    # The last --out wins; nothing runs, every case is refused before a lesson starts.
    argv = ["lessons", f"--out={tmp_path / 'html'}"] + [argument.format(**places) for argument in arguments]
    status = runner.call(argv)
    err = capsys.readouterr().err
    assert status == 2 and len(err.strip().splitlines()) == 1 and err.startswith("error: ") and message in err, err


@pytest.mark.slow
@pytest.mark.parametrize("lesson", LESSON_FILES, ids=lambda path: path.stem)
def test_each_lesson_runs_as_a_plain_script_in_smoke_mode(tmp_path, lesson):
    finished = subprocess.run([sys.executable, str(lesson)], cwd=tmp_path, capture_output=True, text=True,
                              env={**os.environ, "LESSONS_SMOKE": "1"}, timeout=600)
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert finished.stdout.count("Not yet. Hint:") >= 2  # its exercises ran, answers left as placeholders
    assert "[figure: " in finished.stdout  # figures are named, never shown, in a script
    assert "matplotlib" not in finished.stderr.lower(), finished.stderr[-3000:]  # no backend warning, nothing shown
    assert os.listdir(tmp_path) == []  # a lesson writes only into temporary directories


def test_the_conv_macs_checker(capsys):
    assert costs.conv_macs(56 * 56 * 128 * 3 * 3 * 64, side=56, in_channels=64, out_channels=128, kernel=3)
    assert costs.conv_macs(7 * 7 * 5 * 3, side=7, in_channels=3, out_channels=5, kernel=1)
    assert capsys.readouterr().out == "Correct.\nCorrect.\n"
    assert not costs.conv_macs(56 * 56 * 128 * 3 * 3 * 64 * 2)  # FLOPs, not MACs
    assert not costs.conv_macs(None)
    assert capsys.readouterr().out.count("Not yet. Hint: every output element") == 2


def test_the_dense_parameter_share_checker(capsys):
    vgg16_dense = 25088 * 4096 + 4096 + 4096 * 4096 + 4096 + 4096 * 1000 + 1000  # fc6, fc7, fc8 with biases
    assert costs.dense_parameter_share(vgg16_dense / 138_357_544, network="vgg16")
    assert not costs.dense_parameter_share(100 * vgg16_dense / 138_357_544, network="vgg16")
    assert not costs.dense_parameter_share(0.5, network="vgg16")
    out = capsys.readouterr().out
    assert out.startswith("Correct.\nNot yet. Hint: that looks like a percentage") and "per-layer table" in out


def test_the_xla_gflops_checker_agrees_with_xla_itself(capsys):
    variant = models.variant("resnet18")
    module, shape = variant.module(), variant.input_shape(1)
    xla_flops = jax.jit(functools.partial(module.apply, train=False)).lower(
        models.abstract_variables(module, shape), jax.ShapeDtypeStruct(shape, np.float32)).cost_analysis()["flops"]
    assert costs.xla_gflops(xla_flops / 1e9, network="resnet18")
    assert not costs.xla_gflops(cost.count_model("resnet18").ops("macs") / 1e9, network="resnet18")
    assert not costs.xla_gflops(3.64, network="resnet18")  # the padded taps' count
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "Correct." and "that is MACs" in out[1] and "FLOPs with padded taps" in out[2]


def test_the_predicted_time_checker(capsys):
    fit = fitting.linear_fit([0.0, 1.0, 2.0], [1.0, 11.0, 21.0])  # 10 ms per GFLOP + 1 ms
    variant = "resnet18:width=0.5,resolution=64"
    gflops = cost.count_variant(models.variant(variant)).ops("flops") / 1e9
    assert latency.predicted_time_ms(10 * gflops + 1, fit, variant)
    gmacs = cost.count_variant(models.variant(variant)).ops("macs") / 1e9
    assert not latency.predicted_time_ms(10 * gmacs + 1, fit, variant)
    assert not latency.predicted_time_ms(None, fit, variant)
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "Correct." and "not GMACs" in out[1] and "fit.predict" in out[2]


def test_the_dense_layer_flops_per_byte_checker(capsys):
    # fc6 does 2 FLOPs per weight per image (plus its bias additions) and reads each 4-byte weight once per call.
    assert latency.dense_layer_flops_per_byte(64 * 2 / 4, batch_size=64, network="alexnet", layer="fc6")
    assert not latency.dense_layer_flops_per_byte(2 / 4, batch_size=64, network="alexnet", layer="fc6")
    assert not latency.dense_layer_flops_per_byte(8, batch_size=64, network="alexnet", layer="fc6")
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "Correct." and "that is batch 1's" in out[1] and "divide the layer's FLOPs" in out[2]


def test_the_crossover_batch_checker(capsys):
    weights = 138_357_544 * 4  # VGG-16's float32 parameters; it has no BatchNorm statistics
    per_image = 224 * 224 * 3 * 4 + 2 * 224 * 224 * 64 * 4  # the input, and two 64-channel maps alive at once
    assert memory.crossover_batch(weights // per_image + 1, network="vgg16")
    assert not memory.crossover_batch(weights // per_image, network="vgg16")
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "Correct." and out[1].startswith("Not yet. Hint: at batch 1 take the weights' bytes")


def _fits_in_a_gib(batch_size: int, train: bool) -> bool:
    """Whether ResNet-18's analytical memory at this batch is within 1 GiB."""
    return cost.count_model("resnet18", batch_size=batch_size, train=train).memory_bytes <= 2**30


def test_the_largest_batch_checker_for_inference(capsys):
    inference = memory.largest_batch_within("resnet18", 2**30)
    assert _fits_in_a_gib(inference, False) and not _fits_in_a_gib(inference + 1, False)
    assert memory.largest_batch(inference, network="resnet18", budget_gib=1.0)
    assert not memory.largest_batch(inference + 1, network="resnet18", budget_gib=1.0)
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "Correct." and "find the largest b at which it is at most 1 * 2**30 bytes" in out[1]
    assert memory.largest_batch_within("resnet18", 1e6) == 0  # not even its weights fit


@pytest.mark.slow  # counting training steps takes seconds each
def test_the_largest_batch_checker_for_a_training_step(capsys):
    training = memory.largest_batch_within("resnet18", 2**30, train=True)
    assert _fits_in_a_gib(training, True) and not _fits_in_a_gib(training + 1, True)
    assert training < memory.largest_batch_within("resnet18", 2**30)
    assert memory.largest_batch(training, network="resnet18", budget_gib=1.0, train=True)
    assert not memory.largest_batch(training, network="resnet18", budget_gib=1.0)  # the inference question
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "Correct." and "that is a training step's batch" in out[1]
