"""The sweep's queryable table: a sweep directory loads into records with units in their names, and `best` queries them."""

import dataclasses
import json

import pytest

from core import joblog
from explore import jobs, table
from explore import plan as plan_lib
from explore import run as run_lib
from measure import results

SETTINGS = plan_lib.PlanSettings(spaces=("resnet_basic",), sampler="grid", grid_points=2,
                                 ranges=(("width", 0.25, 0.25), ("depth_1", 1.0, 1.0), ("depth_2", 1.0, 1.0),
                                         ("depth_3", 1.0, 1.0), ("depth_4", 1.0, 2.0), ("resolution", 32.0, 32.0)))


def _row(variant: str, batch: int, ms: float, status: str = results.OK) -> dict:
    """A measured row as a measure job stores it."""
    ok = status == results.OK
    return dataclasses.asdict(results.Row(
        model=variant, display_name=variant, family="resnet", batch_size=batch, resolution=32, precision="float32",
        device="test device", status=status, time_per_image_s=ms / 1e3 if ok else None,
        time_per_image_p25_s=0.9 * ms / 1e3 if ok else None, time_per_image_p75_s=1.1 * ms / 1e3 if ok else None,
        images_per_s=1e3 / ms if ok else None, power_source="modelled" if ok else "not measured",
        power_w=10.0 if ok else None, energy_per_image_j=10.0 * ms / 1e3 if ok else None))


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory):
    """A planned sweep of two variants with hand-written results: one fast and less accurate, two seeds each."""
    out = str(tmp_path_factory.mktemp("sweep"))
    planned = plan_lib.load_or_make(SETTINGS, out, progress=lambda _: None)
    shallow, deep = (p.variant for p in planned)
    log = joblog.ResultLog(f"{out}/{run_lib.LOG_NAME}")
    log.append("m1", {"kind": jobs.MEASURE, "variant": shallow, "rows": [_row(shallow, 1, 5.0), _row(shallow, 8, 2.0)]})
    log.append("m2", {"kind": jobs.MEASURE, "variant": deep, "rows": [_row(deep, 1, 30.0),
                                                                       _row(deep, 8, 0.0, results.OUT_OF_MEMORY)]})
    for key, variant, seed, top1 in (("t1", shallow, 0, 0.60), ("t2", shallow, 1, 0.62), ("t3", deep, 0, 0.80),
                                     ("t4", deep, 1, 0.84)):
        log.append(key, {"kind": jobs.TRAIN, "variant": variant, "seed": seed, "status": results.OK, "top1": top1})
    log.close()
    with open(f"{out}/{run_lib.RUN_NAME}", "w") as f:
        json.dump({**dataclasses.asdict(jobs.RunSettings(seeds=(0, 1))), "device": "test device"}, f)
    return out, shallow, deep


def test_a_sweep_loads_into_one_record_per_variant_with_units_in_the_names(sweep_dir):
    out, shallow, deep = sweep_dir
    records = {r["variant"]: r for r in table.load(out)}
    fast, slow = records[shallow], records[deep]
    assert (fast["latency_ms_b1"], fast["latency_ms_b8"], fast["latency_p25_ms_b1"]) == pytest.approx((5.0, 2.0, 4.5))
    assert fast["images_per_s_b8"] == pytest.approx(500.0) and fast["energy_mj_b1"] == pytest.approx(50.0)
    assert slow["latency_ms_b8"] is None and "batch 8: out_of_memory" in slow["failures"]
    assert (fast["top1_pct"], fast["top1_pct_seed0"], fast["top1_pct_seed1"], fast["seeds"]) == pytest.approx(
        (61.0, 60.0, 62.0, 2))
    assert fast["depths"] == "1-1-1-1" and slow["depths"] == "1-1-1-2" and fast["resolution"] == 32
    assert 0 < fast["gflops"] < slow["gflops"] and fast["network"] == "resnet18"
    assert (fast["dataset"], fast["device"]) == ("synthetic", "test device")
    assert "steps=100, batch=32, adamw" in fast["budget"]


def test_best_answers_the_readme_question(sweep_dir):
    out, shallow, deep = sweep_dir
    records = table.load(out)
    assert table.best(records, "top1_pct")["variant"] == deep
    assert table.best(records, "top1_pct", latency_ms_b1=(None, 20))["variant"] == shallow
    assert table.best(records, "top1_pct", latency_ms_b1=(None, 1)) is None
    assert table.best(records, "top1_pct", latency_ms_b8=(0, None))["variant"] == shallow  # deep ran out of memory
