"""Variant strings: parsing, the canonical form, errors naming the knobs, and every command line taking them."""

import dataclasses
import json
import os

import numpy as np
import pytest

import models
from core.errors import UserError
from measure import findings, main_job, points, results
from models import variants

RESNET50_KNOBS = "its knobs are: block, depths, width, num_classes, resolution"


@pytest.mark.parametrize("text, canonical", [
    ("resnet50", "resnet50"),
    ("resnet50:width=1.0", "resnet50"),
    ("resnet50:width=1,resolution=224", "resnet50"),
    ("resnet50:width=0.5", "resnet50:width=0.5"),
    ("resnet18:width=0.750,depths=1-2-2-1", "resnet18:depths=1-2-2-1,width=0.75"),
    ("  resnet18 : depths = 1-2-2-1 , width = .75  ", "resnet18:depths=1-2-2-1,width=0.75"),
    ("resnet18:depths=2-2-2-2", "resnet18"),
    ("resnet18:block=bottleneck", "resnet18:block=bottleneck"),
    ("resnet50:resolution=0128,num_classes=10,width=125e-2", "resnet50:width=1.25,num_classes=10,resolution=128"),
    ("enet:width=0.5,resolution=128", "enet:width=0.5,resolution=128"),
    ("enet:resolution=96,dilated=TRUE", "enet:dilated=true,resolution=96"),
    ("enet:dilated=false,depths=3-3-3-3", "enet"),
    ("vgg16:depths=1-1-2-2-2", "vgg16:depths=1-1-2-2-2"),
    ("vgg19:depths=2-2-3-3-3", "vgg19:depths=2-2-3-3-3"),  # VGG-16's depths, still a VGG-19 variant
    ("googlenet:stem=factorised", "googlenet:stem=factorised"),
    ("googlenet:stem=bvlc", "googlenet"),
    ("inception_v3:aux_head=true", "inception_v3:aux_head=true"),
    ("inception_v4:depths=1-1-1,width=5e-1", "inception_v4:depths=1-1-1,width=0.5"),
    ("alexnet:resolution=227", "alexnet"),
])
def test_canonical_string(text, canonical):
    variant = models.variant(text)
    assert str(variant) == canonical
    assert models.variant(str(variant)) == variant and str(models.variant(canonical)) == canonical


@pytest.mark.parametrize("text, name, knobs, resolution", [
    ("resnet18:depths=1-2-2-1,width=0.75", "resnet18", (("depths", (1, 2, 2, 1)), ("width", 0.75)), None),
    ("enet:width=0.5,dilated=true,resolution=128", "enet", (("width", 0.5), ("dilated", True)), 128),
    ("googlenet:num_classes=10,stem=factorised", "googlenet", (("num_classes", 10), ("stem", "factorised")), None),
    ("inception_v3:aux_head=true", "inception_v3", (("aux_head", True),), None),
    ("vgg16", "vgg16", (), None),
])
def test_fields_hold_plain_typed_values(text, name, knobs, resolution):
    variant = models.variant(text)
    assert (variant.name, variant.knobs, variant.resolution) == (name, knobs, resolution)
    assert [type(v) for _, v in variant.knobs] == [type(v) for _, v in knobs]
    assert variant.is_default == (not knobs and resolution is None)


@pytest.mark.parametrize("name", models.names())
def test_every_network_round_trips_as_its_own_name(name):
    variant = models.variant(name)
    assert str(variant) == name and variant.is_default and variant.display_name == models.spec(name).display_name
    assert variant.input_shape(2) == models.input_shape(name, 2)
    assert variant.module() == models.get(name)


def test_equal_variants_have_equal_strings_and_hashes():
    spellings = ["resnet18:width=0.750,depths=1-2-2-1", "resnet18:depths=1-2-2-1,width=0.75",
                 "resnet18: depths=01-2-2-1 ,width=7.5e-1,num_classes=1000"]
    parsed = [models.variant(t) for t in spellings]
    assert len({str(v) for v in parsed}) == 1 and len(set(parsed)) == 1 and len({hash(v) for v in parsed}) == 1
    assert models.variant("resnet18:width=0.5") != models.variant("resnet18:width=0.5,resolution=64")
    assert models.variant(parsed[0]) is parsed[0]  # a Variant passes through
    # Values from a sweep (NumPy) give the same variant as the text does.
    swept = variants.from_knobs("resnet18", resolution=np.int64(224), width=np.float32(0.75),
                                depths=np.array([1, 2, 2, 1]))
    assert swept == parsed[0] and str(swept) == "resnet18:depths=1-2-2-1,width=0.75"


def test_module_and_input_shape_follow_the_knobs():
    half = models.variant("resnet50:width=0.5,resolution=64")
    count = lambda module, shape: models.count_params(models.abstract_variables(module, shape))
    assert half.input_shape(3) == (3, 64, 64, 3) and half.display_name == "ResNet-50 (width=0.5,resolution=64)"
    params = count(half.module(), half.input_shape())
    assert params == count(models.get("resnet50", width=0.5), (1, 64, 64, 3))
    assert params != count(models.get("resnet50"), (1, 64, 64, 3))
    assert half.module(num_classes=10) == models.get("resnet50", width=0.5, num_classes=10)
    assert models.variant("resnet50:num_classes=5").module(num_classes=10).num_classes == 10  # extra wins


@pytest.mark.parametrize("text, fragments", [
    ("", ["a variant is a network name", "resnet50:width=0.5"]),
    ("   ", ["a variant is a network name"]),
    ("width=0.5", ["'width=0.5' has no network name", "name:knob=value"]),
    (":width=0.5", ["has no network name"]),
    ("resnet9", ["unknown model 'resnet9'", "choose one of: alexnet,"]),
    ("resnet9:width=0.5", ["unknown model 'resnet9'"]),
    ("resnet50:wdth=0.5", ["unknown knob 'wdth' for resnet50", RESNET50_KNOBS]),
    ("resnet50:Width=0.5", ["unknown knob 'Width'"]),
    ("resnet50:", ["an empty setting is not knob=value", "resnet50's knobs are: block, depths"]),
    ("resnet50:width=0.5,", ["an empty setting is not knob=value"]),
    ("resnet50:width", ["'width' is not knob=value", "resnet50's knobs are:"]),
    ("resnet50:width=0.5,width=0.75", ["sets width twice"]),
    ("resnet50:width=", ["width has no value"]),
    ("resnet50:depths=", ["depths has no value"]),
    ("resnet50:width=abc", ["resnet50: width must be a number; got 'abc'"]),
    ("resnet50:width=nan", ["width must be a number; got 'nan'"]),
    ("resnet50:width=0", ["width must be a positive finite number"]),
    ("resnet50:depths=1-x", ["depths must be integers joined by '-'", "got '1-x'"]),
    ("resnet50:depths=1--2-2", ["depths must be integers joined by '-'"]),
    ("resnet50:depths=1-2-2", ["depths must be 4 positive integers"]),
    ("resnet50:num_classes=1.5", ["num_classes must be an integer; got '1.5'"]),
    ("resnet50:block=big", ["block must be one of basic, bottleneck"]),
    ("enet:dilated=1", ["dilated must be true or false; got '1'"]),
    ("resnet50:resolution=12.5", ["resolution must be an integer number of pixels; got '12.5'"]),
    ("resnet50:resolution=16", ["resnet50 needs a resolution from 32 to 4096 pixels; got 16"]),
    ("resnet50:resolution=4097", ["from 32 to 4096 pixels; got 4097"]),
])
def test_bad_text_is_a_one_line_user_error(text, fragments):
    with pytest.raises(UserError) as caught:
        models.variant(text)
    message = str(caught.value)
    assert "\n" not in message and all(f in message for f in fragments), message


def test_non_strings_are_refused():
    with pytest.raises(UserError, match="a variant is a network name"):
        models.variant(5)


def test_list_flags_rejoin_a_variants_knobs():
    # How absl's list flag splits --models=resnet50,enet:width=0.5,resolution=128,...
    items = ["resnet50", "enet:width=0.5", "resolution=128", "vgg16", "resnet18:depths=1-1-1-1", "width=0.5"]
    assert [str(v) for v in models.variant_list(items)] == [
        "resnet50", "enet:width=0.5,resolution=128", "vgg16", "resnet18:depths=1-1-1-1,width=0.5"]
    assert models.variant_list([]) == []
    with pytest.raises(UserError, match="'width=0.5' has no network name"):
        models.variant_list(["resnet18", "width=0.5"])  # knobs need the name:knob=value form


def test_job_measures_equal_variants_once_and_refuses_two_resolutions(tmp_path):
    config = main_job.Config(models=("resnet18:width=0.25,resolution=32", "resnet18:resolution=32,width=0.250", "enet"),
                        batch_sizes=(1,), out_dir=str(tmp_path))
    assert [str(v) for v in main_job.check_config(config)] == ["resnet18:width=0.25,resolution=32", "enet"]
    at_32 = dataclasses.replace(config, measure=points.Settings(resolution=32))
    assert [str(v) for v in main_job.check_config(at_32)] == ["resnet18:width=0.25,resolution=32", "enet"]
    with pytest.raises(UserError, match="sets resolution 32 but --resolution=64"):
        main_job.check_config(dataclasses.replace(config, measure=points.Settings(resolution=64)))
    with pytest.raises(UserError, match="unknown knob 'wdth' for resnet18"):
        main_job.check_config(dataclasses.replace(config, models=("resnet18:wdth=2",)))


def _row(model, energy_mj, gops, top1):
    """A measured row with what the accuracy-reading fits use."""
    return results.Row(model=model, display_name=model, family="resnet", batch_size=1, resolution=224,
                       precision="float32", device="test", paper_ops_per_image=int(gops * 1e9), time_per_image_s=1e-3,
                       images_per_s=1e3, power_source="nvml", power_w=10.0, energy_per_image_j=energy_mj / 1e3,
                       top1_percent_paper=top1)


def test_accuracy_fits_skip_variants_without_the_papers_accuracy():
    rows = [_row("resnet18:width=0.25", 1.0, 0.1, 0.0), _row("resnet18", 10.0, 1.8, 69.6),
            _row("resnet50", 20.0, 4.1, 76.0)]
    order = findings.energy_order(rows)
    assert order.n == 3 and (order.frugal_network, order.best_network) == ("resnet18", "resnet50")
    bound = findings.energy_bound(rows, 0.005)
    assert bound.networks == ("resnet18:width=0.25",) and bound.best_top1_percent is None
    with pytest.raises(ValueError, match="no network measured has the paper's accuracy"):
        findings.energy_order([_row(f"resnet18:width=0.{i}", i, i, 0.0) for i in (2, 3, 4)])


def test_models_cli_lists_variants(run_program):
    result = run_program("models", "--models=resnet18,resnet18:width=0.5,resolution=64")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    half = models.count_params(models.abstract_variables(models.get("resnet18", width=0.5), (1, 64, 64, 3)))
    assert lines[1].split() == ["resnet18", "ResNet-18", "resnet", "224", "11,689,512", "11.69"]
    assert lines[2].split() == ["resnet18:width=0.5,resolution=64", "ResNet-18", "resnet", "64", f"{half:,}", "-"]


def test_cost_cli_counts_a_variant(run_program):
    result = run_program("measure.cost", "--model=resnet18:width=0.50", "--json")
    assert result.returncode == 0, result.stderr
    row = json.loads(result.stdout)
    half = models.count_params(models.abstract_variables(models.get("resnet18", width=0.5), (1, 224, 224, 3)))
    assert (row["model"], row["resolution"], row["params"]) == ("resnet18:width=0.5", 224, half)
    table = run_program("measure.cost", "--model=resnet18:width=0.5,resolution=64", "--resolution=64")
    assert table.returncode == 0 and table.stdout.startswith("resnet18:width=0.5,resolution=64  batch 1  64x64\n")


def test_measure_cli_measures_a_variant(tmp_path, run_program):
    out = tmp_path / "out"
    result = run_program("measure", "--models=resnet18:width=0.25,resolution=32,resnet18:resolution=32,width=0.250",
                  "--batch_sizes=1", "--min_time=0", "--repeats=1", "--warmup=0", f"--out={out}")
    assert result.returncode == 0, result.stderr
    assert "[1/1] resnet18:width=0.25,resolution=32 batch 1:" in result.stderr
    contents = results.read(str(out))  # the file validates, its row in the native setting
    [row] = contents.rows
    assert (row.model, row.display_name, row.resolution, row.native_resolution, row.status) == (
        "resnet18:width=0.25,resolution=32", "ResNet-18 (width=0.25,resolution=32)", 32, 32, "ok")
    assert (row.top1_percent_paper, row.gops_paper, row.params_m_paper) == (0.0, 0.0, 0.0)  # not the paper's
    assert contents.rows_of(results.Setting("float32")) == [row]
    assert "| ResNet-18 (width=0.25,resolution=32) | resnet | 0.83 | 0.01 | — |" in (out / "report.md").read_text()


@pytest.mark.parametrize("module, flags, message", [
    ("models", ["--models=resnet18:wdth=0.5"], f"unknown knob 'wdth' for resnet18; {RESNET50_KNOBS}"),
    ("measure.cost", ["--model=resnet18:width=abc"], "resnet18: width must be a number; got 'abc'"),
    ("measure.cost", ["--model=resnet18:resolution=64", "--resolution=32"],
     "resnet18:resolution=64 sets resolution 64 but --resolution=32"),
    ("measure", ["--models=resnet18:depths=1-x"], "depths must be integers joined by '-'"),
    ("measure", ["--models=enet:resolution=64", "--resolution=32"], "sets resolution 64 but --resolution=32"),
])
def test_clis_refuse_bad_variants_in_one_line(tmp_path, run_program, module, flags, message):
    result = run_program(module, *flags, *([f"--out={tmp_path}/out"] if module == "measure" else []))
    assert result.returncode == 2 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr
    assert not os.path.exists(tmp_path / "out")
