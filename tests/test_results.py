"""results.json: round trip, strict JSON, and one line for every kind of malformed file (never a hang)."""

import copy
import dataclasses
import json
import math
import os
import threading

import pytest

from core.errors import UserError
from measure import results

ENVIRONMENT = {"device": "Test GPU", "platform": "gpu", "jax": "0.0", "jaxlib": "0.0", "xla_flags": "",
               "peak_flops_per_s": {"float32": 1e12}}


def sample() -> results.Results:
    """Two rows of one setting, one measured and one out of memory."""
    ok = results.Row("resnet18", "ResNet-18", "resnet", 1, 224, "float32", "Test GPU", native_resolution=224,
                     params=11_689_512, time_per_image_s=0.002, images_per_s=600.0, latency_calls=5)
    oom = dataclasses.replace(ok, batch_size=64, status=results.OUT_OF_MEMORY, error="RESOURCE_EXHAUSTED",
                              time_per_image_s=None, images_per_s=None, latency_calls=None)
    return results.Results(dict(ENVIRONMENT), [results.Setting("float32")], [ok, oom])


def test_round_trip_and_csv(tmp_path):
    results.write(str(tmp_path), sample())
    assert results.read(str(tmp_path)) == sample()
    lines = (tmp_path / "results.csv").read_text().splitlines()
    assert lines[0].split(",") == results.FIELDS and len(lines) == 3
    assert results.read(str(tmp_path / "nowhere")) == results.Results()


def test_json_is_written_strictly(tmp_path):
    contents = sample()
    contents.rows[0].power_w = math.nan
    with pytest.raises(ValueError, match="JSON compliant"):
        results.write(str(tmp_path), contents)
    assert not os.path.exists(tmp_path / "results.json")


def test_put_replaces_by_key_and_settings_select_rows():
    contents = sample()
    contents.put(dataclasses.replace(contents.rows[1], status=results.CRASHED))
    assert [r.status for r in contents.rows] == ["ok", "crashed"]
    contents.put(dataclasses.replace(contents.rows[0], precision="float16"))
    assert len(contents.rows) == 3
    assert len(contents.rows_of(results.Setting("float32"))) == 2
    assert len(contents.rows_of(results.Setting("float32", 224))) == 2  # the native size, asked for by number
    assert contents.rows_of(results.Setting("float32", 160)) == []
    contents.remove(contents.rows[2].key)
    assert len(contents.rows) == 2


def _data() -> dict:
    return {"format": results.FORMAT, "environment": dict(ENVIRONMENT), "settings": [{"precision": "float32",
            "resolution": None}], "rows": [dataclasses.asdict(r) for r in sample().rows]}


def _mutated(change) -> str:
    data = copy.deepcopy(_data())
    change(data)
    return json.dumps(data)


# Each malformed file and a fragment of the reason its one-line message gives.
MALFORMED = {
    "garbage bytes": (b"\x89PNG\r\n\x1a\n\x00\xff", "not a valid results file"),
    "empty": (b"", "not a valid results file"),
    "truncated": (json.dumps(_data())[:200].encode(), "not a valid results file"),
    "a list": (b"[1, 2, 3]", "the top level is a list"),
    "old format": (_mutated(lambda d: d.update(format=1)).encode(), "format 1"),
    "unknown key": (_mutated(lambda d: d.update(extra=1)).encode(), "unknown keys"),
    "rows not a list": (_mutated(lambda d: d.update(rows={})).encode(), "'rows' is a dict"),
    "row not an object": (_mutated(lambda d: d["rows"].append(3)).encode(), "row 2 is a int"),
    "missing field": (_mutated(lambda d: d["rows"][0].pop("batch_size")).encode(), "lacks ['batch_size']"),
    "unknown field": (_mutated(lambda d: d["rows"][0].update(colour="red")).encode(), "unknown ['colour']"),
    "wrong type": (_mutated(lambda d: d["rows"][0].update(batch_size="1")).encode(), "field 'batch_size' is '1'"),
    "bool for int": (_mutated(lambda d: d["rows"][0].update(params=True)).encode(), "field 'params' is True"),
    "NaN": (json.dumps(_data()).replace('"time_per_image_s": 0.002', '"time_per_image_s": NaN').encode(),
            "NaN is not a number"),
    "Infinity": (json.dumps(_data()).replace('"images_per_s": 600.0', '"images_per_s": Infinity').encode(),
                 "Infinity is not a number"),
    "unknown status": (_mutated(lambda d: d["rows"][0].update(status="fine")).encode(), "status 'fine'"),
    "zero batch": (_mutated(lambda d: d["rows"][0].update(batch_size=0)).encode(), "batch size 0"),
    "duplicate point": (_mutated(lambda d: d["rows"].append(d["rows"][0])).encode(), "same point"),
    "row in no setting": (_mutated(lambda d: d["rows"][0].update(precision="bfloat16")).encode(), "no setting"),
    "bad setting": (_mutated(lambda d: d["settings"].append({"precision": "int4", "resolution": None})).encode(),
                    "setting 1"),
    "environment missing device": (_mutated(lambda d: d["environment"].pop("device")).encode(), "'device'"),
    "bad peak": (_mutated(lambda d: d["environment"]["peak_flops_per_s"].update(float32=-1)).encode(),
                 "peak_flops_per_s"),
    "deep nesting": (b"[" * 100_000 + b"]" * 100_000, "not a valid results file"),
    "huge integer": (_mutated(lambda d: d["rows"][0].update(params=0)).replace('"params": 0', '"params": '
                                                                               + "9" * 5000).encode(),
                     "not a valid results file"),
}


@pytest.mark.parametrize("name", MALFORMED)
def test_malformed_files_give_one_line_naming_the_file_and_the_fix(tmp_path, name):
    data, reason = MALFORMED[name]
    (tmp_path / "results.json").write_bytes(data)
    with pytest.raises(UserError) as error:
        results.read(str(tmp_path))
    message = str(error.value)
    assert "\n" not in message and str(tmp_path / "results.json") in message and reason in message, message
    assert "move it away or rerun with --overwrite" in message


def test_a_directory_or_a_fifo_in_its_place_is_refused_without_hanging(tmp_path):
    (tmp_path / "results.json").mkdir()
    with pytest.raises(UserError, match="is not a regular file; move it away"):
        results.read(str(tmp_path))
    os.rmdir(tmp_path / "results.json")
    os.mkfifo(tmp_path / "results.json")
    outcome = []
    reader = threading.Thread(target=lambda: outcome.append(_error_of(results.read, str(tmp_path))), daemon=True)
    reader.start()
    reader.join(timeout=10)
    assert outcome and "is not a regular file" in outcome[0]


def _error_of(fn, *args) -> str:
    try:
        fn(*args)
    except UserError as error:
        return str(error)
    return ""
