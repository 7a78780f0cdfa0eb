"""`python -m explore`: plans by seed, sweeps that resume after SIGKILL, shards and collect, one-line errors."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from core import joblog
from core.errors import UserError
from explore import analyse, jobs
from explore import plan as plan_lib
from explore import run as run_lib

# Two-point spaces of the smallest ResNets: counted, timed and trained in seconds.
TINY = ["--spaces=resnet_basic", "--ranges=width=0.25:0.25,depth_1=1:1,depth_2=1:1,depth_3=1:1,depth_4=1:2,"
        "resolution=32:32", "--sampler=grid", "--grid_points=2", "--batch_sizes=1", "--min_time=0",
        "--train_steps=2", "--train_batch_size=16"]


def _explore(*args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "explore", *args], capture_output=True, text=True, timeout=400,
                          **kwargs)


def _lines(path) -> list[dict]:
    return [json.loads(line) for line in open(path, encoding="utf-8")]


def test_the_same_seed_plans_the_same_variants_and_other_settings_are_refused(tmp_path):
    settings = plan_lib.PlanSettings(spaces=("resnet_basic", "resnet18/width"), samples=3, seed=4,
                                     ranges=(("width", 0.25, 1.0), ("resolution", 32.0, 64.0)))
    first = plan_lib.load_or_make(settings, str(tmp_path), progress=lambda _: None)
    assert [p.variant for p in first] == [p.variant for p in plan_lib.make(settings, progress=lambda _: None)]
    drawn = [p for p in first if "resnet_basic" in p.spaces]
    assert len(drawn) == 3 and all(0.25 <= p.config["width"] <= 1.0 and p.config["resolution"] in (32, 64)
                                   for p in drawn)
    assert len({p.variant for p in first}) == len(first)  # one entry per variant, whichever spaces drew it
    assert any(p.spaces == ("resnet18/width",) for p in first) and all(p.costs["flops"] > 0 for p in first)
    with pytest.raises(UserError, match="other settings .*seed"):
        plan_lib.load_or_make(plan_lib.PlanSettings(spaces=settings.spaces, samples=3, seed=5,
                                                    ranges=settings.ranges), str(tmp_path))
    # The limit only guards costing: plan.json leaves it out and a stored plan loads whatever it is.
    assert "max_variants" not in json.load(open(tmp_path / "plan.json"))["settings"]
    again = plan_lib.load_or_make(dataclasses.replace(settings, max_variants=1), str(tmp_path), progress=lambda _: None)
    assert [p.variant for p in again] == [p.variant for p in first]


@pytest.mark.slow
def test_sweep_resumes_after_sigkill_and_every_job_is_recorded_once(tmp_path):
    out = str(tmp_path / "sweep")
    process = subprocess.Popen([sys.executable, "-m", "explore", f"--out={out}", *TINY, "--grid_points=2",
                                "--notrain"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    shard = os.path.join(out, "results.shard-0-of-1.jsonl")
    deadline = time.monotonic() + 300
    while not (os.path.exists(shard) and os.path.getsize(shard)) and process.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)  # after the first line: the second variant is lost mid-measurement
    process.wait()
    with open(shard, "ab") as f:
        f.write(b'{"key": "measure resnet18:torn')  # as a kill mid-append leaves it
    done = _explore(f"--out={out}", *TINY, "--notrain")
    assert done.returncode == 0, done.stderr
    lines = _lines(os.path.join(out, "results.jsonl"))
    assert sorted(line["variant"] for line in lines) == sorted(p.variant for p in plan_lib.read(out)[1])
    assert len(lines) == 2 and all(row["status"] == "ok" and row["time_per_image_s"] > 0
                                   for line in lines for row in line["rows"])
    assert "the report is" in done.stderr + done.stdout
    for name in ("report.md", "report.html", "variants.csv", "analysis.json", "figures/time_vs_ops.png"):
        assert os.path.getsize(os.path.join(out, name)) > 0
    again = _explore(f"--out={out}", *TINY, "--notrain")  # nothing left to do: the same files again
    assert again.returncode == 0 and "run: 2 jobs" in again.stdout and "[1/" not in again.stdout


@pytest.mark.slow
def test_two_shards_then_collect_and_analyse_train_and_time_every_variant_once(tmp_path):
    out = str(tmp_path / "sharded")
    shards = [subprocess.Popen([sys.executable, "-m", "explore", f"--out={out}", *TINY, "--num_shards=2",
                                f"--shard_index={i}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
              for i in range(2)]
    for shard in shards:
        stdout, stderr = shard.communicate(timeout=400)
        assert shard.returncode == 0, stderr
        assert "collect:" not in stdout and "analyse:" not in stdout  # sharded runs stop after their own jobs
        assert stdout.count("] measure ") == stdout.count("] train ") == 1  # a variant's jobs stay together
    names = sorted(os.listdir(out))
    assert "results.shard-0-of-2.jsonl" in names and "results.shard-1-of-2.jsonl" in names
    _, partial = analyse.load(out)  # analysis reads the shards as they are, before any collect
    assert all(v.top1 and v.rows for v in partial)
    merged = _explore(f"--out={out}", *TINY, "--steps=collect,analyse")
    assert merged.returncode == 0, merged.stderr
    lines = _lines(os.path.join(out, "results.jsonl"))
    keys = [line["key"] for line in lines]
    assert len(keys) == len(set(keys)) == 4  # 2 variants x (measure + train seed 0)
    trained = [line for line in lines if line["kind"] == "train"]
    assert all(line["status"] == "ok" and 0.0 <= line["top1"] <= 1.0 for line in trained)
    # Each job's learning curve: an evaluation at every quarter of the budget, the last its top-1.
    assert all([step for step, _ in line["curve"]] == [1, 2] and line["curve"][-1][1] == pytest.approx(line["top1"])
               for line in trained)
    assert os.path.getsize(os.path.join(out, "figures", "learning_curves.png")) > 10_000
    analysis = json.load(open(os.path.join(out, "analysis.json")))
    assert {v["variant"] for v in analysis["variants"]} == {line["variant"] for line in trained}
    assert all(v["top1_pct"] == pytest.approx(100 * t["top1"]) for v in analysis["variants"] for t in trained
               if t["variant"] == v["variant"])


@pytest.mark.parametrize("changes, message", [
    ({"spaces": ("resnet18/sideways",)}, "unknown scaling rule 'sideways'"),
    ({"spaces": ("vgg16/depth",)}, None),  # VGG has depths: a valid series
    ({"spaces": ("alexnet/depth",)}, "no depths knob"),
    ({"ranges": (("girth", 1.0, 2.0),)}, "names 'girth', a knob none of the spaces"),
    ({"ranges": (("width", 2.0, 1.0),)}, "low is above high"),
    ({"ranges": (("width", 5.0, 10.0),)}, r"width=5:10 reaches outside resnet_basic's own width range 0\.125\.\.2;"),
    ({"spaces": ("resnet_basic", "resnet18/width"), "ranges": (("resolution", 32.0, 640.0),)},
     r"reaches outside resnet_basic's own resolution range 32\.\.320"),
    ({"ranges": (("width", float("nan"), 1.0),)}, "--ranges width: nan is not a finite number"),
    ({"ranges": (("width", 0.25, float("inf")),)}, "--ranges width: inf is not a finite number"),
    ({"ranges": (("width", 0.3, 0.35),)}, "no multiple of 0.125 lies in 0.3..0.35"),
    ({"constraints": (("flops", float("nan"), float("nan")),)}, "constraint flops: nan is not a finite number"),
    ({"constraints": (("flops", None, float("inf")),)}, "constraint flops: inf is not a finite number"),
    ({"samples": 655361}, "has only 655360 distinct points"),
    ({"sampler": "grid", "grid_points": 50}, None),  # the limit guards the sample step, not the settings
    ({"sampler": "sobol"}, "unknown sampler"),
    ({"spaces": ()}, "no spaces to explore"),
])
def test_plan_settings_are_checked_before_anything_runs(changes, message):
    settings = dataclasses.replace(plan_lib.PlanSettings(spaces=("resnet_basic",)), **changes)
    if message is None:
        plan_lib.check(settings)
        return
    with pytest.raises(UserError, match=message):
        plan_lib.check(settings)


@pytest.mark.parametrize("changes, message", [
    ({"steps": ("dance",)}, "unknown step dance"),
    ({"energy_budgets_j": (0.0,)}, "positive"),
    ({"energy_budgets_j": (1e-3, float("nan"))}, r"energy budgets must be positive finite numbers; got \[0.001, nan\]"),
    ({"energy_budgets_j": (float("inf"),)}, "positive finite"),
    ({"run": jobs.RunSettings(seeds=())}, "--seeds is empty"),
    ({"run": jobs.RunSettings(dataset="digits", train_batch_size=5000)}, "larger than digits"),
])
def test_run_settings_are_checked_before_anything_runs(changes, message):
    settings = run_lib.Settings(out_dir="unused", plan=plan_lib.PlanSettings(spaces=("resnet_basic",)), **changes)
    with pytest.raises(UserError, match=message):
        run_lib.check(settings)


def test_a_plan_over_max_variants_is_refused_before_any_variant_is_costed():
    grid = plan_lib.PlanSettings(spaces=("resnet_basic", "resnet_bottleneck"), sampler="grid", grid_points=50)
    # 16 widths, 8 depths in each of 4 stages, 10 resolutions: the grid asks for more points than width has.
    assert plan_lib.sizes(grid) == {"resnet_basic": 16 * 8**4 * 10, "resnet_bottleneck": 16 * 8**4 * 10}
    with pytest.raises(UserError, match=r"the grid sampler would cost 1,310,720 variants .*more than "
                                        r"--max_variants=2,000; lower --grid_points or narrow --ranges"):
        plan_lib.make(grid, progress=lambda _: None)
    drawn = plan_lib.PlanSettings(spaces=("resnet_basic", "resnet18/width"), samples=1995)
    assert plan_lib.sizes(drawn) == {"resnet_basic": 1995, "resnet18/width": 6}
    with pytest.raises(UserError, match="random sampler would cost 2,001 variants .*ask for fewer --samples"):
        plan_lib.check_size(drawn)
    plan_lib.check_size(dataclasses.replace(drawn, max_variants=2001))
    assert dataclasses.replace(drawn, max_variants=2001) == drawn  # the limit decides no variant


def test_the_limit_guards_only_the_sample_step():
    big = plan_lib.PlanSettings(spaces=("resnet_basic",), sampler="grid", grid_points=4)  # 4 * 4**4 * 4 points
    with pytest.raises(UserError, match="would cost 4,096 variants"):
        run_lib.check(run_lib.Settings(out_dir="unused", plan=big, steps=("sample",)))
    run_lib.check(run_lib.Settings(out_dir="unused", plan=big, steps=("collect", "analyse")))


def test_impossible_constraints_are_refused():
    settings = plan_lib.PlanSettings(spaces=("resnet_basic",), samples=2, constraints=(("flops", 1.0, 2.0),),
                                     ranges=(("width", 0.25, 0.375), ("resolution", 32.0, 32.0)))
    with pytest.raises(UserError, match="constraints are impossible or too tight"):
        plan_lib.make(settings, progress=lambda _: None)


def test_asking_for_more_samples_than_a_space_has_is_refused():
    narrow = plan_lib.PlanSettings(spaces=("resnet_basic",), samples=5, ranges=tuple(
        (k, 1.0, 1.0) for k in ("depth_1", "depth_2", "depth_3", "depth_4")) + (("width", 0.25, 0.25),
                                                                             ("resolution", 32.0, 64.0)))
    with pytest.raises(UserError, match="has only 2 distinct points"):
        plan_lib.make(narrow, progress=lambda _: None)


def test_a_corrupt_line_in_the_log_is_one_line_naming_it(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    settings = plan_lib.PlanSettings(spaces=("resnet_basic",), samples=1,
                                     ranges=(("width", 0.25, 0.25), ("resolution", 32.0, 32.0)))
    plan_lib.load_or_make(settings, str(out), progress=lambda _: None)
    (out / "results.jsonl").write_text('{"key": "a", "kind": "measure"}\nnot json\n{"key": "b"}\n')
    done = _explore(f"--out={out}", "--steps=analyse")
    assert done.returncode == 2 and "line 2 is not a JSON object" in done.stderr and done.stderr.count("\n") == 1


def test_a_second_copy_on_the_same_shard_is_refused(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    path = str(out / "results.shard-0-of-1.jsonl")
    with joblog.shard_lock(path):
        done = _explore(f"--out={out}", *TINY, "--notrain")
    assert done.returncode == 2 and "another process" in done.stderr


def test_a_run_with_other_settings_is_refused_but_more_seeds_are_added(tmp_path):
    run_lib._check_same_run(jobs.RunSettings(seeds=(0,)), "device A", str(tmp_path))
    run_lib._check_same_run(jobs.RunSettings(seeds=(1,), measure=False), "device A", str(tmp_path))
    record = json.load(open(tmp_path / "run.json"))
    assert record["seeds"] == [0, 1] and record["measure"] is True
    with pytest.raises(UserError, match="other device"):
        run_lib._check_same_run(jobs.RunSettings(seeds=(0,)), "device B", str(tmp_path))
    with pytest.raises(UserError, match="other train_steps"):
        run_lib._check_same_run(jobs.RunSettings(train_steps=7), "device A", str(tmp_path))
    (tmp_path / "run.json").write_text("[1, 2")
    with pytest.raises(UserError, match="not a run record"):
        run_lib._check_same_run(jobs.RunSettings(), "device A", str(tmp_path))


@pytest.mark.slow
def test_the_recheck_resumes_after_sigkill_and_reports_kendalls_tau(tmp_path):
    out = str(tmp_path / "sweep")
    four = [*TINY, "--ranges=width=0.25:0.5,depth_1=1:1,depth_2=1:1,depth_3=1:1,depth_4=1:2,resolution=32:32",
            "--nomeasure"]
    first = _explore(f"--out={out}", *four)
    assert first.returncode == 0, first.stderr
    process = subprocess.Popen([sys.executable, "-m", "explore", f"--out={out}", *four, "--steps=recheck,analyse"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    shard = os.path.join(out, "recheck.shard-0-of-1.jsonl")
    deadline = time.monotonic() + 300
    while not (os.path.exists(shard) and os.path.getsize(shard)) and process.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)  # after the first recheck: the others are lost mid-training
    process.wait()
    done = _explore(f"--out={out}", *four, "--recheck")
    assert done.returncode == 0, done.stderr
    assert "recheck: 3 variants of 4 trained again at 3x the budget (6 steps)" in done.stdout
    rechecked = _lines(shard)
    assert len(rechecked) == len({line["key"] for line in rechecked}) == 3
    assert all("steps=6" in line["key"] and line["status"] == "ok" for line in rechecked)
    assert len(_lines(os.path.join(out, "results.jsonl"))) == 4  # the sweep's own results are untouched
    analysis = json.load(open(os.path.join(out, "analysis.json")))
    assert len(analysis["recheck"]["variants"]) == 3 and -1 <= analysis["recheck"]["kendall_tau"] <= 1
    assert "Kendall's tau between the two rankings" in open(os.path.join(out, "report.md")).read()


@pytest.mark.slow
def test_the_synthetic_task_trains_offline_under_its_canonical_string(tmp_path):
    out = str(tmp_path / "sweep")
    done = _explore(f"--out={out}", *TINY, "--nomeasure", "--dataset=synthetic:noise=0.10,classes=4")
    assert done.returncode == 0, done.stderr
    assert json.load(open(os.path.join(out, "run.json")))["dataset"] == "synthetic:classes=4"
    trained = _lines(os.path.join(out, "results.jsonl"))
    assert len(trained) == 2 and all(line["dataset"] == "synthetic:classes=4" and "on synthetic:classes=4 " in
                                     line["key"] for line in trained)
    assert "synthetic:classes=4" in open(os.path.join(out, "report.md")).read()


def test_a_seed_subset_trains_every_seed_on_a_spread_of_the_variants_and_the_first_seed_on_the_rest():
    planned = [plan_lib.PlannedVariant(f"resnet18:width=0.{i + 1}", ("s",), {}, {}) for i in range(8)]
    settings = jobs.RunSettings(measure=False, seeds=(0, 1, 2), seed_subset=3)
    seeds = {}
    for _, payload in jobs.job_list(planned, settings, "cpu"):
        seeds.setdefault(payload["variant"], []).append(payload["seed"])
    assert [len(s) for s in seeds.values()] == [3, 1, 1, 1, 3, 1, 1, 3]  # the first, the last and one between
    assert all(s[0] == 0 for s in seeds.values())
    every = jobs.job_list(planned, dataclasses.replace(settings, seed_subset=0), "cpu")
    assert len(every) == 24 and jobs.spread(8, 20) == list(range(8)) and jobs.spread(5, 1) == [0]
