"""The ground floor: importing it starts neither JAX, Flax nor TensorFlow, and its plain values parse exactly."""

import dataclasses
import json
import subprocess
import sys
from typing import Optional

import pytest
from absl import flags

from core import cli, values
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


@dataclasses.dataclass(frozen=True)
class _Knobs:
    """A tiny configuration: a field of each kind a flag is made from."""

    name: str = dataclasses.field(default="a", metadata={"help": "A name."})
    count: int = dataclasses.field(default=2, metadata={"help": "A count.", "lower_bound": 1})
    rate: float = dataclasses.field(default=0.5, metadata={"help": "A rate.", "lower_bound": 0, "upper_bound": 1})
    limit: Optional[float] = dataclasses.field(default=None, metadata={"help": "A limit (default: none)."})
    fast: bool = dataclasses.field(default=True, metadata={"help": "Go fast."})
    kind: str = dataclasses.field(default="x", metadata={"help": "x or y.", "choices": ("x", "y")})
    sizes: tuple[int, ...] = dataclasses.field(default=(1, 16), metadata={"help": "Sizes."})
    scales: tuple[float, ...] = dataclasses.field(default=(2.0, 0.1234567), metadata={"help": "Scales."})
    words: tuple[str, ...] = dataclasses.field(default=("a",), metadata={"help": "Words."})
    seed: int = dataclasses.field(default=0, metadata={"help": "A seed."})


_RENAMED = {"seed": "knob_seed"}


def _knob_flags() -> flags.FlagValues:
    flag_values = flags.FlagValues()
    cli.define_flags(_Knobs, flag_values, rename=_RENAMED)
    return flag_values


def _knobs(*args: str) -> _Knobs:
    flag_values = _knob_flags()
    flag_values(["program", *args])
    return _Knobs(**cli.config_kwargs(_Knobs, flag_values, rename=_RENAMED))


def test_a_dataclass_gives_a_flag_per_field_and_the_flags_give_it_back():
    flag_values = _knob_flags()
    assert [flag.name for flag in flag_values.flags_by_module_dict()[__name__]] == [
        "name", "count", "rate", "limit", "fast", "kind", "sizes", "scales", "words", "knob_seed"]
    assert flag_values["knob_seed"].help == "A seed." and flag_values["scales"].default == ["2", "0.1234567"]
    assert _knobs() == _Knobs()
    assert _knobs("--name=b", "--count=3", "--rate=1", "--limit=2.5", "--nofast", "--kind=y", "--sizes=4,8",
                  "--scales=0.25,1e3", "--words=b,c", "--knob_seed=7") == _Knobs(
        "b", 3, 1.0, 2.5, False, "y", (4, 8), (0.25, 1000.0), ("b", "c"), 7)


@pytest.mark.parametrize("args, message", [
    (["--count=0"], "flag --count=0: 0 is not a positive integer"),
    (["--rate=2"], "flag --rate=2: 2.0 is not a number in the range [0, 1]"),
    (["--rate=nan"], "--rate must be a finite number"),
    (["--limit=inf"], "--limit must be a finite number"),
    (["--kind=z"], "flag --kind=z: value should be one of <x|y>"),
    (["--sizes=a"], "--sizes takes integers; got a"),
    (["--scales=1,inf"], "--scales takes finite numbers; got 1,inf"),
])
def test_a_bad_flag_of_a_dataclass_is_one_line(capsys, args, message):
    def main(argv):
        del argv
        cli.config_kwargs(_Knobs, flag_values, rename=_RENAMED)

    flag_values = _knob_flags()
    assert cli.call(main, flag_values, ["program", *args]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith("error: ") and message in error, error


def test_a_field_no_flag_can_be_made_from_is_a_bug_naming_it():
    @dataclasses.dataclass
    class Spans:
        spans: tuple[tuple[str, float], ...] = dataclasses.field(default=(), metadata={"help": "Spans."})
        unexplained: int = 0

    with pytest.raises(TypeError, match="Spans.spans: no flag type"):
        cli.define_flags(Spans, flags.FlagValues())
    with pytest.raises(TypeError, match="Spans.unexplained needs a default and a metadata help for --unexplained"):
        cli.define_flags(Spans, flags.FlagValues(), skip=("spans",))
