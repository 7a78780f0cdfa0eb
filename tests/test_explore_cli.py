"""`python -m explore` on hostile input: one line on stderr, exit code 2, nothing written, before any work."""

import dataclasses

import pytest

from core import cli
from explore import jobs as jobs_lib
from explore import plan as plan_lib

_GRID = ["--spaces=resnet_basic,resnet_bottleneck", "--sampler=grid", "--grid_points=50"]


def _networks_dirs(root) -> None:
    """Bad --networks_results targets under root: a file, a directory without results, corrupt results."""
    (root / "file").write_text("not a directory")
    (root / "empty").mkdir()
    (root / "corrupt").mkdir()
    (root / "corrupt" / "results.json").write_text('{"format": ')


BAD_INPUTS = [
    # spaces and ranges
    (["--spaces=no_such_space"], "unknown space 'no_such_space'; choose one of: resnet_basic"),
    (["--spaces="], "no spaces to explore: give --spaces"),
    (["--ranges=girth=1:2"], "--ranges names 'girth', a knob none of the spaces resnet_basic, resnet_bottleneck"),
    (["--ranges=width"], "--ranges item 'width' is not name=low:high (e.g. width=0.25:1)"),
    (["--ranges=width=0.5"], "--ranges item 'width=0.5' is not name=low:high"),
    (["--ranges=width=:1"], "--ranges items need both ends, e.g. width=0.25:1"),
    (["--ranges=width=nan:1"], "--ranges item 'width=nan:1': nan is not a finite number; give finite ends"),
    (["--ranges=width=0.25:inf"], "--ranges item 'width=0.25:inf': inf is not a finite number"),
    (["--ranges=width=1:0.5"], "--ranges width=1:0.5: low is above high; swap them"),
    (["--spaces=resnet_basic", "--ranges=width=5:10"],
     "--ranges width=5:10 reaches outside resnet_basic's own width range 0.125..2; ranges only narrow a space"),
    (["--ranges=resolution=16:64"], "--ranges resolution=16:64 reaches outside resnet_basic's own resolution "
                                    "range 32..320"),
    (["--spaces=vgg", "--ranges=depth_5=1:6"], "--ranges depth_5=1:6 reaches outside vgg's own depth_5 range 1..4"),
    (["--ranges=width=0.3:0.35"], "knob width: no multiple of 0.125 lies in 0.3..0.35"),
    # samplers and constraints
    (["--constraints=latency=:1"], "--constraints: unknown metric 'latency'; choose from: flops, macs"),
    (["--constraints=flops=nan:nan"], "--constraints item 'flops=nan:nan': nan is not a finite number"),
    (["--constraints=params=-inf:"], "--constraints item 'params=-inf:': -inf is not a finite number"),
    (["--constraints=flops"], "--constraints item 'flops' is not name=low:high"),
    (["--constraints=flops=2:1"], "constraint flops: low 2.0 is above high 1.0; swap them"),
    (["--sampler=sobol"], "flag --sampler=sobol"),
    (["--samples=0"], "flag --samples=0: 0 is not a positive integer"),
    (["--samples=700"], "space 'resnet_basic' has only 648 distinct points; ask for at most 648"),
    (_GRID, "the grid sampler would cost 1,310,720 variants (resnet_basic: 655,360, resnet_bottleneck: 655,360), "
            "more than --max_variants=2,000; lower --grid_points or narrow --ranges, or raise --max_variants"),
    (["--spaces=resnet_basic,resnet_bottleneck", "--samples=1500"],
     "the random sampler would cost 3,000 variants (resnet_basic: 1,500, resnet_bottleneck: 1,500), more than "
     "--max_variants=2,000; ask for fewer --samples, or raise --max_variants"),
    (["--max_variants=0"], "flag --max_variants=0: 0 is not a positive integer"),
    # what runs per variant
    (["--steps=dance"], "unknown step dance; choose from: sample, run, collect, recheck, analyse"),
    (["--steps="], "unknown step (none); choose from: sample"),
    (["--nomeasure", "--notrain"], "nothing to run: --nomeasure and --notrain together leave no job"),
    (["--batch_sizes=0"], "--batch_sizes takes positive integers; got 0"),
    (["--batch_sizes=-1"], "--batch_sizes takes positive integers; got -1"),
    (["--batch_sizes=1,x"], "--batch_sizes takes positive integers; got 1,x"),
    (["--batch_sizes="], "--batch_sizes takes positive integers; got"),
    (["--seeds=x"], "--seeds takes integers; got x"),
    (["--seeds="], "--seeds is empty; give at least one training seed"),
    (["--seeds=-1"], "seed must be 0 or more; got -1"),
    (["--min_time=nan"], "--min_time must be a finite number"),
    (["--learning_rate=inf"], "--learning_rate must be a finite number"),
    (["--dataset=digits", "--train_batch_size=5000"], "--train_batch_size 5000 is larger than digits's 1437 training "
     "examples"),
    (["--precise_bn_images=-1"], "flag --precise_bn_images=-1: -1 is not a non-negative integer"),
    (["--dataset=nosuch"], "unknown data set 'nosuch'"),
    # shards
    (["--num_shards=0", "--shard_index=0"], "flag --num_shards=0: 0 is not a positive integer"),
    (["--num_shards=-2"], "flag --num_shards=-2: -2 is not a positive integer"),
    (["--shard_index=-1", "--num_shards=2"], "flag --shard_index=-1: -1 is not a non-negative integer"),
    (["--shard_index=1"], "--shard_index and --num_shards go together; pass both or neither"),
    (["--shard_index=2", "--num_shards=2"], "--shard_index must be in 0..1 for 2 shards; got 2"),
    # budgets and context
    (["--energy_budgets_mj=nan"], "--energy_budgets_mj takes finite numbers; got nan"),
    (["--energy_budgets_mj=1,inf"], "--energy_budgets_mj takes finite numbers; got 1,inf"),
    (["--energy_budgets_mj=0"], "--energy_budgets_mj takes positive energies per image in mJ; got 0"),
    (["--energy_budgets_mj=-5"], "--energy_budgets_mj takes positive energies per image in mJ; got -5"),
    (["--power_budget_w=5"], "--power_budget_w and --fps go together; pass both or neither"),
    (["--power_budget_w=5", "--fps=0"], "--fps must be more than 0"),
    (["--power_budget_w=0", "--fps=30"], "--power_budget_w must be more than 0"),
    (["--fps=nan", "--power_budget_w=5"], "--fps must be a finite number"),
    (["--networks_results={tmp}/nowhere"], "/nowhere does not exist; give a directory python -m measure wrote"),
    (["--networks_results={tmp}/file"], "/file is not a directory; give a directory python -m measure wrote"),
    (["--networks_results={tmp}/empty"], "/empty holds no results.json; give a directory python -m measure wrote"),
    (["--networks_results={tmp}/corrupt"], "/corrupt/results.json is not a valid results file (Expecting value"),
    # the command line itself
    (["extra"], "unexpected arguments 'extra'"),
    (["--no_such_flag=1"], "Unknown command line flag 'no_such_flag'"),
]


@pytest.mark.parametrize("args, message", BAD_INPUTS)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, run_program, args, message):
    _networks_dirs(tmp_path)
    out = tmp_path / "sweep"
    done = run_program("explore", f"--out={out}", *(arg.format(tmp=tmp_path) for arg in args))
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: ") and message in done.stderr, done.stderr
    assert not out.exists() or not any(out.iterdir())



def test_every_plan_and_run_setting_has_a_flag_with_its_default_and_help(run_program):
    """A flag per field, made from it, but for the plan's lists of items: declared by hand, with the demo's defaults."""
    module = run_program.module("explore")
    assert module.PLAN_FIELDS_BY_HAND == ("spaces", "ranges", "constraints")
    module.FLAGS.unparse_flags()
    module.FLAGS(["explore"])
    for settings, renamed, by_hand in ((plan_lib.PlanSettings, module.PLAN_FLAG_NAMES, module.PLAN_FIELDS_BY_HAND),
                                       (jobs_lib.RunSettings, module.RUN_FLAG_NAMES, ())):
        parsed = cli.config_kwargs(settings, module.FLAGS, skip=by_hand, rename=renamed)
        # (an enum's help starts with its <choices>)
        for field in dataclasses.fields(settings):
            flag = module.FLAGS[renamed.get(field.name, field.name)]
            if field.name not in by_hand:
                assert parsed[field.name] == field.default and flag.help.endswith(field.metadata["help"]), field.name
    assert module.FLAGS["min_time"].default == jobs_lib.RunSettings.min_time_s  # renamed flags keep their names
    assert module.FLAGS["sample_seed"].default == plan_lib.PlanSettings.seed
