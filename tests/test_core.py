"""The ground floor: importing it starts neither JAX, Flax nor TensorFlow, and its plain values parse exactly."""

import json
import subprocess
import sys

import pytest

from core import values
from core.errors import UserError

_HEAVY = ("jax", "jaxlib", "flax", "optax", "tensorflow", "tensorflow_datasets", "orbax")


def test_importing_core_imports_no_jax_flax_or_tensorflow():
    program = ("import json, sys, core, core.cli, core.errors, core.failures, core.files, core.precisions, "
               "core.runtime, core.values\n"
               f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {_HEAVY!r})))")
    loaded = json.loads(subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                                       check=True).stdout)
    assert loaded == []


@pytest.mark.parametrize("seconds, text", [(0, "0m00s"), (9.4, "0m09s"), (59.6, "1m00s"), (187, "3m07s"),
                                           (3723, "1h02m03s"), (86399, "23h59m59s")])
def test_durations_read_as_progress_lines_give_them(seconds, text):
    assert values.format_duration(seconds) == text


def test_lists_of_numbers_and_ranges_parse_or_name_the_flag():
    assert values.numbers("seeds", ["3", "1"], int) == (3, 1)
    assert values.positive_integers("batch_sizes", ["16", "1", "16"]) == (1, 16)
    assert values.bounds("ranges", "width=0.25:1") == ("width", 0.25, 1.0)
    assert values.bounds("constraints", "flops=:1e9") == ("flops", None, 1e9)
    for call, message in [(lambda: values.numbers("budgets", ["1", "nan"]), "--budgets takes finite numbers; got 1,nan"),
                          (lambda: values.numbers("seeds", ["1.5"], int), "--seeds takes integers; got 1.5"),
                          (lambda: values.positive_integers("batch_sizes", ["0"]), "--batch_sizes takes positive"),
                          (lambda: values.bounds("ranges", "width=inf:1"), "inf is not a finite number"),
                          (lambda: values.bounds("ranges", "width"), "is not name=low:high")]:
        with pytest.raises(UserError, match=message):
            call()
