"""Prints the model table: name, family, input size and exact parameter count of every network or variant."""

from absl import flags

import models
from core import cli

FLAGS = flags.FlagValues()  # this program's own: programs can share a process (tests)
_MODELS = flags.DEFINE_list("models", models.names(), "Networks or variants to list, e.g. "
                            "resnet50,resnet18:width=0.5,resolution=128 (default: the 14 networks).", flag_values=FLAGS)


def main(argv):
    """Prints one row per variant, its parameters counted abstractly (the paper's only for a network as is)."""
    del argv
    variants = list(dict.fromkeys(models.variant_list(_MODELS.value)))  # fails early, naming the problem
    width = max([14] + [len(str(v)) + 2 for v in variants])
    print(f"{'name':<{width}}{'display':<14}{'family':<11}{'input':>6}{'params':>14}{'paper M':>9}")
    for variant in variants:
        spec, shape = models.spec(variant.name), variant.input_shape()
        params = models.count_params(models.abstract_variables(variant.module(), shape))
        paper = f"{spec.paper.params_m_paper:.2f}" if variant.is_default else "-"
        print(f"{variant!s:<{width}}{spec.display_name:<14}{spec.family:<11}{shape[1]:>6}{params:>14,}{paper:>9}")


if __name__ == "__main__":
    cli.run(main, FLAGS)
