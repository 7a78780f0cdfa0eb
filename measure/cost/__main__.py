"""Prints the analytical cost of a network or variant: `python -m measure.cost --model=resnet50:width=0.5`."""

import json

from absl import flags

import models
from core import cli, runtime
from measure import cost as cost_lib
from measure import predict

FLAGS = flags.FlagValues()  # this program's own: programs can share a process (tests)
_MODEL = flags.DEFINE_string("model", "resnet50", "Network or variant to count (e.g. resnet50:width=0.5), or "
                             "'all' for the 14 networks.", flag_values=FLAGS)
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 1, "Images per batch.", lower_bound=1, flag_values=FLAGS)
_RESOLUTION = flags.DEFINE_integer("resolution", None, "Input side in pixels (default: the variant's, else the "
                                   "network's own).", flag_values=FLAGS)
_CONVENTION = flags.DEFINE_enum("convention", "flops", cost_lib.CONVENTIONS,
                                "Operation convention of the table (see measure/cost/rules.py).", flag_values=FLAGS)
_REAL_TAPS = flags.DEFINE_bool("real_taps", False, "flops: count only kernel taps on real input, as XLA does.",
                               flag_values=FLAGS)
_DENSE_GROUPS = flags.DEFINE_bool("dense_groups", False, "paper: count grouped convolutions as dense.",
                                  flag_values=FLAGS)
_PER_LAYER = flags.DEFINE_bool("per_layer", False, "Print the per-module breakdown.", flag_values=FLAGS)
_DEPTH = flags.DEFINE_integer("depth", 2, "Module path levels kept in the per-layer breakdown.", lower_bound=1,
                              flag_values=FLAGS)
_SORT = flags.DEFINE_enum("sort", "order", ["order", "ops", "params", "activations", "path"],
                          "Order of the per-layer rows.", flag_values=FLAGS)
_TRAIN = flags.DEFINE_bool("train", False, "Also count one training step (loss value and gradient).", flag_values=FLAGS)
_PREDICTOR = flags.DEFINE_string("predictor", None, "A predictor file of this device (python -m measure.predict): "
                                 "also print the predicted latency per image at --batch_size.", flag_values=FLAGS)
_JSON = flags.DEFINE_bool("json", False, "Print JSON (an object, or a list for --model=all) instead of tables.",
                          flag_values=FLAGS)


def _options() -> dict:
    return {"real_taps": _REAL_TAPS.value} if _CONVENTION.value == "flops" else (
        {"dense_groups": _DENSE_GROUPS.value} if _CONVENTION.value == "paper" else {})


def _count(variant: models.Variant, train: bool = False) -> cost_lib.Cost:
    """The cost of a variant, named by its canonical string."""
    cost = cost_lib.count_variant(variant.sized(_RESOLUTION.value), _BATCH_SIZE.value, train=train)
    cost.model = str(variant)  # the variant asked for, not the one --resolution sized
    return cost


def _summary(variant: models.Variant, predictor=None) -> dict:
    """Counts one variant; with --train, adds the training step and its ratio to the forward pass; with a
    predictor, its predicted latency (and energy) per image at the batch size."""
    cost = _count(variant)
    row = cost.as_dict()
    if predictor is not None:
        at_one = cost if _BATCH_SIZE.value == 1 else cost_lib.count_variant(variant.sized(_RESOLUTION.value))
        guess = predictor.predict(predict.Layers.of(at_one), _BATCH_SIZE.value)
        row["predicted"] = {"latency_ms_per_image": guess.latency_s * 1e3, "low_ms": guess.low_s * 1e3,
                            "high_ms": guess.high_s * 1e3,
                            "energy_mj_per_image": None if guess.energy_j is None else guess.energy_j * 1e3}
    if _TRAIN.value:
        step = _count(variant, train=True)
        row["train_step"] = step.as_dict()
        row["train_to_forward_flops"] = step.ops("flops") / cost.ops("flops")
    return {"cost": cost, "row": row}


def _print_table(result: dict) -> None:
    cost, row, unit = result["cost"], result["row"], _CONVENTION.value
    print(f"{row['model']}  batch {row['batch_size']}  {row['resolution']}x{row['resolution']}")
    print(f"  params        {row['params']:>16,}   ({row['param_bytes'] / 2**20:,.1f} MiB)")
    print(f"  MACs          {row['macs']:>16,}")
    print(f"  FLOPs         {row['flops']:>16,}   ({row['flops_real_taps']:,} on real taps, as XLA)")
    print(f"  paper ops     {row['paper_ops']:>16,}   ({row['paper_ops_dense_groups']:,} groups dense)")
    print(f"  activations   {row['activations']:>16,}")
    print(f"  memory bytes  {row['memory_bytes']:>16,}   (peak activations {row['peak_activation_bytes']:,})")
    if "predicted" in row:
        guess = row["predicted"]
        energy = (f", energy {guess['energy_mj_per_image']:.3g} mJ/image" if guess["energy_mj_per_image"] is not None
                  else "")
        print(f"  predicted     {guess['latency_ms_per_image']:>16.4g} ms/image at batch {row['batch_size']}  (90 % "
              f"interval {guess['low_ms']:.4g} to {guess['high_ms']:.4g} ms){energy}")
    if "train_step" in row:
        print(f"  train step    {row['train_step']['flops']:>16,} FLOPs  "
              f"({row['train_to_forward_flops']:.2f}x the forward pass)")
    if row["unknown_primitives"]:
        print(f"  not counted (no rule): {row['unknown_primitives']}")
    for note in row["notes"]:
        print(f"  note: {note}")
    if _PER_LAYER.value:
        print(f"\n  {'module':<40}{unit:>16}{'params':>14}{'activations':>14}")
        for layer in cost.per_layer(unit, _DEPTH.value, _SORT.value, **_options()):
            print(f"  {layer.path:<40}{layer.ops:>16,}{layer.params:>14,}{layer.activations:>14,}")
        print(f"\n  {'primitive':<40}{unit:>16}")
        for name, ops in cost.per_primitive(unit, **_options()).items():
            if ops:
                print(f"  {name:<40}{ops:>16,}")
    print()


def main(argv):
    """Counts the requested networks and prints tables or JSON."""
    del argv
    variants = [models.variant(v) for v in (models.names() if _MODEL.value == "all" else [_MODEL.value])]
    for variant in variants:  # bad input fails before any output
        variant.sized(_RESOLUTION.value).input_shape(_BATCH_SIZE.value)
    predictor = None
    if _PREDICTOR.value is not None:
        runtime.configure()  # the runtime the predictor was fitted under, before JAX starts
        predictor = predict.load_here(_PREDICTOR.value, precision=None)
    results = [_summary(variant, predictor) for variant in variants]
    if _JSON.value:
        rows = [r["row"] for r in results]
        print(json.dumps(rows if _MODEL.value == "all" else rows[0], indent=1))
    else:
        for result in results:
            _print_table(result)


if __name__ == "__main__":
    cli.run(main, FLAGS)
