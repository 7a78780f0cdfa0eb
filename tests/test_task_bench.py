"""The task benchmark: the linear classifier's bound on the synthetic task, the rising span, the program's files."""

import csv
import json
import math

import pytest

from explore import task_bench


def _row(gflops, top1):
    return {"model": f"net at {gflops}", "gflops": gflops, "top1_pct": top1, "train_s": 1.0, "status": "ok"}


def test_the_rising_span_ends_at_the_last_network_that_beat_every_smaller_one():
    linear = {**_row(None, 20.0), "model": "linear"}
    rows = [linear, _row(0.001, 40.0), _row(0.004, 60.0), _row(0.04, 70.0), _row(0.1, 70.5), _row(0.3, 69.0)]
    decades, low, high = task_bench.rising_span(rows)
    # 0.1 GFLOPs gains half a point (under RISE_PCT): accuracy had flattened at 0.04.
    assert (low, high) == (0.001, 0.04) and decades == pytest.approx(math.log10(40))
    assert task_bench.rising_span([linear, _row(0.01, 50.0), _row(0.001, 55.0)])[0] == 0.0  # the smallest was best
    assert task_bench.rising_span([linear])[0] == 0.0


def test_a_linear_classifier_on_pixels_stays_near_chance_on_the_synthetic_task():
    # Ten classes (chance 10 %): shapes anywhere at any angle, textures at random phases, so the
    # pixels hold next to no linear cue; a plain object's brightness is the one it finds.
    result = task_bench.linear_top1("synthetic", 2000, 16)
    assert 0.1 < result["top1"] < 0.3, result


@pytest.mark.slow
def test_the_program_writes_its_table_and_figures_and_a_rerun_trains_nothing(tmp_path, run_program):
    network = "resnet18:depths=1-1-1-1,width=0.125,resolution=32"
    args = [f"--out={tmp_path}", f"--networks={network}", "--steps=4", "--batch_size=8", "--curve_points=2",
            "--linear_resolution=8"]
    first = run_program("explore.task_bench", *args)
    assert first.returncode == 0, first.stderr
    rows = list(csv.DictReader(open(tmp_path / "task_bench.csv")))
    assert [r["model"] for r in rows] == ["linear on pixels (8 px)", network]
    assert float(rows[1]["gflops"]) > 0 and rows[0]["gflops"] == ""
    saved = json.loads((tmp_path / "task_bench.json").read_text())
    assert saved["summary"]["dataset"] == "synthetic" and saved["summary"]["budget"] == "4 steps of 8"
    assert [step for step, _ in saved["results"][1]["curve"]] == [2, 4]
    assert all((tmp_path / name).stat().st_size > 1000 for name in ("accuracy_vs_steps.png", "accuracy_vs_gflops.png"))
    again = run_program("explore.task_bench", *args)
    assert again.returncode == 0 and "[1/" not in again.stdout  # every training was in the log
    assert list(csv.DictReader(open(tmp_path / "task_bench.csv"))) == rows


def test_a_bad_network_or_data_set_is_one_line(tmp_path, run_program):
    result = run_program("explore.task_bench", f"--out={tmp_path}", "--networks=resnet18:width=nope")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    result = run_program("explore.task_bench", f"--out={tmp_path}", "--dataset=synthetic:classes=99")
    assert result.returncode == 2 and "classes must be 2 to 40" in result.stderr
    assert not list(tmp_path.iterdir())
