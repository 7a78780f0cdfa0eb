"""The cost module on the 14 networks: the paper's G-Ops, XLA's flops, training steps, the CLI."""

import functools
import json
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

import models
from measure import cost

# The knobs that make a network the one the paper counted, where its default is another definition:
#   googlenet: the first author's Torch GoogLeNet (factorised stem, no LRN), not BVLC's.
PAPER_VARIANTS = {"googlenet": {"stem": "factorised"}}
# inception_v4 is the standard network of Szegedy et al. 2016 (42.7 M parameters), not the paper's
# unknown 31.57 M model: its count is pinned, not compared.
INCEPTION_V4_PAPER_GOPS = 24.568


@functools.cache
def forward(name):
    """The cost of a network's forward pass at batch 1 and its default resolution."""
    return cost.count_model(name)


@pytest.mark.parametrize("name", [n for n in models.names() if n != "inception_v4"])
def test_paper_ops_reproduce_the_paper(name):
    counted = cost.count_model(name, **PAPER_VARIANTS[name]) if name in PAPER_VARIANTS else forward(name)
    assert counted.ops("paper", dense_groups=True) / 1e9 == pytest.approx(models.spec(name).paper.gops_paper,
                                                                         rel=0.01)
    assert forward(name).breakdown.unknown_primitives == {}


def test_counts_where_the_paper_counted_another_definition():
    assert forward("googlenet").ops("paper", dense_groups=True) / 1e9 == pytest.approx(3.189, abs=1e-3)  # BVLC
    assert forward("inception_v4").ops("paper", dense_groups=True) / 1e9 == pytest.approx(
        INCEPTION_V4_PAPER_GOPS, abs=1e-3)
    assert forward("inception_v4").breakdown.unknown_primitives == {}


@pytest.mark.parametrize("name", models.names())
def test_real_tap_flops_agree_with_xla_cost_analysis(name):
    module = models.get(name)
    shape = models.input_shape(name)
    variables = models.abstract_variables(module, shape)
    lowered = jax.jit(functools.partial(module.apply, train=False)).lower(
        variables, jax.ShapeDtypeStruct(shape, jnp.float32))
    xla = lowered.cost_analysis()["flops"]
    # Apart are BatchNorm's parameter-only arithmetic and XLA's 32-bit rounding (measure/cost/rules.py).
    assert forward(name).ops("flops", real_taps=True) == pytest.approx(xla, rel=1e-4)


@pytest.mark.parametrize("name, resolution", [("alexnet", 64), ("resnet18", 32), ("googlenet", 32)])
def test_xla_agreement_is_exact_where_its_sums_are(name, resolution):
    # At width 1/8 every count stays below 2**24, where XLA's 32-bit float sums are exact.
    module = models.get(name, width=0.125, num_classes=10)
    shape = models.input_shape(name, 1, resolution)
    variables = models.abstract_variables(module, shape)
    apply = functools.partial(module.apply, train=False)
    x = jax.ShapeDtypeStruct(shape, jnp.float32)
    xla = jax.jit(apply).lower(variables, x).cost_analysis()
    whole = cost.count_function(apply, variables, x)
    assert whole.ops("flops", real_taps=True) == xla["flops"] < 2**24
    assert whole.total.transcendentals == xla.get("transcendentals", 0)
    # count_module leaves out BatchNorm's scale * rsqrt(var + eps): 2 flops and 1 transcendental a channel.
    channels = sum(leaf.size for leaf in jax.tree.leaves(variables.get("batch_stats", {}))) // 2
    model = cost.count_module(module, shape)
    assert (name == "resnet18") == (channels > 0)
    assert xla["flops"] - model.ops("flops", real_taps=True) == 2 * channels
    assert xla.get("transcendentals", 0) - model.total.transcendentals == channels


@pytest.mark.parametrize("name", models.names())
def test_params_and_memory_are_consistent(name):
    result = forward(name)
    assert result.params == models.count_params(models.abstract_variables(models.get(name),
                                                                         models.input_shape(name)))
    assert result.param_bytes == 4 * result.params
    assert 0 < result.peak_activation_bytes < result.memory_bytes
    assert result.memory_bytes == (result.param_bytes + result.batch_stats_bytes + result.input_bytes
                                   + result.peak_activation_bytes)


def test_alexnet_groups_count_as_dense_only_on_request():
    alexnet = forward("alexnet")
    grouped, dense = alexnet.ops("paper"), alexnet.ops("paper", dense_groups=True)
    # conv2, conv4 and conv5 run in 2 groups: dense counting doubles exactly their MACs.
    rows = {r.path: r.ops for r in alexnet.per_layer("macs", depth=1)}
    assert dense - grouped == 2 * (rows["conv2"] + rows["conv4"] + rows["conv5"])
    assert grouped / 1e9 == pytest.approx(1.45, abs=0.01)


def test_alexnet_activations_are_its_convolution_pooling_and_dense_outputs():
    convolutions = 96 * 55 * 55 + 256 * 27 * 27 + 384 * 13 * 13 * 2 + 256 * 13 * 13
    pooling = 96 * 27 * 27 + 256 * 13 * 13 + 256 * 6 * 6
    dense = 4096 + 4096 + 1000
    # LRN's window sums across channels (96 * 55 * 55 + 256 * 27 * 27) normalise: not activations.
    assert forward("alexnet").total.activations == convolutions + pooling + dense == 781_736


def test_ops_scale_with_batch_and_memory_grows_with_it():
    one, eight = forward("resnet18"), cost.count_model("resnet18", batch_size=8)
    assert eight.ops("macs") == 8 * one.ops("macs")
    assert eight.ops("paper") == 8 * one.ops("paper")
    assert eight.param_bytes == one.param_bytes
    # Every intermediate carries the batch: the job derives batch-N memory from batch 1 on this.
    assert eight.peak_activation_bytes == 8 * one.peak_activation_bytes
    assert eight.total.activations == 8 * one.total.activations


def test_knobs_flow_through_count_model():
    half = cost.count_model("resnet18", width=0.5)
    assert half.params == models.count_params(models.abstract_variables(models.get("resnet18", width=0.5),
                                                                      (1, 224, 224, 3)))
    assert 0.2 < half.ops("macs") / forward("resnet18").ops("macs") < 0.3  # width^2
    fc_macs = 512 * 1000  # every feature map doubles its side at 448; the classifier stays
    large = cost.count_model("resnet18", resolution=448)
    assert large.ops("macs") - fc_macs == 4 * (forward("resnet18").ops("macs") - fc_macs)


def test_training_step_costs_about_three_forward_passes():
    step = cost.count_model("resnet18", train=True)
    ratio = step.ops("flops") / forward("resnet18").ops("flops")
    assert 2.9 < ratio < 3.5  # backward = gradients of inputs and of weights, each ~ the forward
    assert step.breakdown.unknown_primitives == {}
    assert step.peak_activation_bytes > 5 * forward("resnet18").peak_activation_bytes  # saved activations
    # Attributed to modules even under jvp and transpose.
    assert {row.path for row in step.per_layer(depth=1)} >= {"stem_conv", "stage1", "stage4", "fc"}


_COUNT_WITHOUT_PROFILE = """
import json
import flax.linen as nn
import jax
from measure import cost
from measure.cost import walk
result = cost.count_model("resnet50")
dense = nn.Dense(2)
after = jax.make_jaxpr(lambda x: dense.init_with_output(jax.random.key(0), x))(jax.ShapeDtypeStruct((1, 3), "float32"))
print(json.dumps({"paper": result.ops("paper"), "flops": result.ops("flops"),
                  "rows": [[r.path, r.ops, r.params, r.activations] for r in result.per_layer("paper", depth=3)],
                  "scoped_after": any(walk.scope_names(e.source_info.name_stack) for e in after.jaxpr.eqns)}))
"""


def test_counts_do_not_depend_on_flax_profile():
    # FLAX_PROFILE=false turns off Flax's named scope per module call, which the per-layer rows and
    # the paper's module rules key on: counting turns it on for its own trace only.
    env = {**os.environ, "FLAX_PROFILE": "false"}
    run = subprocess.run([sys.executable, "-c", _COUNT_WITHOUT_PROFILE], capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr
    counted = json.loads(run.stdout)
    expected = forward("resnet50")
    assert counted["paper"] == expected.ops("paper") and counted["flops"] == expected.ops("flops")
    rows = [[r.path, r.ops, r.params, r.activations] for r in expected.per_layer("paper", depth=3)]
    assert len(rows) > 50 and counted["rows"] == rows
    assert counted["scoped_after"] is False  # the user's setting is back once counting is done


def test_cli_json_and_tables(run_program):
    result = run_program("measure.cost", "--model=enet", "--json", "--train")
    assert result.returncode == 0, result.stderr
    row = json.loads(result.stdout)
    for key in ("model", "batch_size", "resolution", "params", "macs", "flops", "paper_ops", "activations",
                "memory_bytes", "unknown_primitives"):
        assert key in row
    assert (row["model"], row["batch_size"], row["resolution"], row["params"]) == ("enet", 1, 224, 5_861_508)
    assert row["train_to_forward_flops"] > 2.5
    table = run_program("measure.cost", "--model=bn_nin", "--per_layer", "--depth=1", "--convention=paper", "--sort=ops")
    assert table.returncode == 0, table.stderr
    assert "8,655,336" in table.stdout and "block1" in table.stdout and "conv_general_dilated" in table.stdout


def test_cli_all_models_is_a_json_list(run_program):
    result = run_program("measure.cost", "--model=all", "--json", "--resolution=299")
    rows = json.loads(result.stdout)
    assert [r["model"] for r in rows] == models.names()
    assert {r["resolution"] for r in rows} == {299}


def _readme_block(command: str) -> list[str]:
    """The lines README.md shows under `$ command` in its code block."""
    lines = (pathlib.Path(__file__).parents[1] / "README.md").read_text().splitlines()
    start = lines.index(f"$ {command}") + 1
    return lines[start:lines.index("```", start)]


def test_readme_shows_what_the_cli_prints(run_program):
    result = run_program("measure.cost", "--model=resnet50")
    assert result.returncode == 0, result.stderr
    assert _readme_block(".venv/bin/python -m measure.cost --model=resnet50") == result.stdout.rstrip("\n").splitlines()


@pytest.mark.parametrize("flags, message", [
    (("--model=resnet9",), "unknown model 'resnet9'"),
    (("--convention=gflops",), "convention"),
    (("--batch_size=0",), "batch_size"),
    (("--model=resnet50", "--resolution=8"), "from 32 to 4096"),
    (("--modle=resnet50",), "modle"),
])
def test_cli_bad_flags_fail_in_one_line(run_program, flags, message):
    result = run_program("measure.cost", *flags)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
    assert result.stdout == ""
