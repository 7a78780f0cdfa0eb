"""Prints the model table: name, family, input size and exact parameter count of every network."""

from absl import flags

import models
from models import cli

_MODELS = flags.DEFINE_list("models", models.names(), "Networks to list (default: all 14).")


def main(argv):
    """Prints one row per network, its parameters counted abstractly next to the paper's."""
    del argv
    for name in _MODELS.value:
        models.spec(name)  # fails early, naming the choices, on an unknown name
    print(f"{'name':<14}{'display':<14}{'family':<11}{'input':>6}{'params':>14}{'paper M':>9}")
    for name in _MODELS.value:
        spec = models.spec(name)
        variables = models.abstract_variables(models.get(name), models.input_shape(name))
        print(f"{name:<14}{spec.display_name:<14}{spec.family:<11}{spec.input_size:>6}"
              f"{models.count_params(variables):>14,}{spec.paper.params_m_paper:>9.2f}")


if __name__ == "__main__":
    cli.run(main)
