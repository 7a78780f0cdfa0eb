"""The runtime configuration: chosen XLA flags added before JAX starts, the user's win, unknown ones left out."""

import json
import os
import subprocess
import sys
import textwrap

from core import runtime

YNN = "--xla_cpu_experimental_ynn_fusion_type="
PRESET = "--xla_cpu_opt_preset=CPU_OPT_PRESET_FAST_COMPILE"
CHOSEN = f"{YNN} {PRESET}"

# Each scenario needs a process whose JAX has not started: one child runs them in order, resetting
# the module's record between them, and starts JAX only for the last.
_SCENARIOS = textwrap.dedent("""
    import json, os
    from core import runtime
    seen = {}
    os.environ.pop("XLA_FLAGS", None)
    seen["default"] = runtime.configure()
    seen["again"] = runtime.configure()
    runtime._configured.clear()
    os.environ["XLA_FLAGS"] = "--xla_cpu_experimental_ynn_fusion_type=+individual_convolution"
    seen["user"] = runtime.configure()
    runtime._configured.clear()
    os.environ["XLA_FLAGS"] = "--xla_dump_disable_metadata=true"
    runtime.CHOSEN_XLA_FLAGS = {"cpu": ("--xla_no_such_flag_anywhere=1", "--xla_cpu_experimental_ynn_fusion_type=")}
    seen["unknown"] = runtime.configure()
    import jax
    jax.devices()
    runtime._configured.clear()
    seen["late"] = runtime.configure()
    print(json.dumps(seen))
""")


def test_configure_in_a_fresh_process():
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    child = subprocess.run([sys.executable, "-c", _SCENARIOS], capture_output=True, text=True, env=env, timeout=300)
    assert child.returncode == 0, child.stderr
    seen = json.loads(child.stdout)
    assert seen["default"]["xla_flags"] == CHOSEN and seen["default"]["xla_flags_chosen"] == CHOSEN
    assert seen["again"] == seen["default"]
    user = "--xla_cpu_experimental_ynn_fusion_type=+individual_convolution"
    assert seen["user"]["xla_flags"] == f"{user} {PRESET}" and seen["user"]["xla_flags_chosen"] == PRESET
    assert "set by the user in XLA_FLAGS" in seen["user"]["runtime_notes"]
    assert seen["unknown"]["xla_flags"] == f"--xla_dump_disable_metadata=true {YNN}"
    assert "--xla_no_such_flag_anywhere=1 left out: jaxlib" in seen["unknown"]["runtime_notes"]
    assert "backends had started" in seen["late"]["runtime_notes"] and seen["late"]["xla_flags_chosen"] == ""


def test_xla_accepts_only_flags_it_knows():
    assert runtime.xla_accepts(YNN)
    assert not runtime.xla_accepts("--xla_no_such_flag_anywhere=1")


def test_in_force_records_allocator_settings(monkeypatch):
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.hugetlb=1")
    assert runtime.in_force()["glibc_tunables"] == "glibc.malloc.hugetlb=1"
