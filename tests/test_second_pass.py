"""tools/second_pass.py: which NumPy SIMD targets the second nbval pass switches off."""

import importlib.util
import platform
import subprocess
import sys
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parent.parent / "tools" / "second_pass.py"
spec = importlib.util.spec_from_file_location("second_pass", TOOL)
second_pass = importlib.util.module_from_spec(spec)
spec.loader.exec_module(second_pass)

DISPATCH = ["X86_V3", "X86_V4", "AVX512_ICL", "AVX512_SPR"]


def report(have):
    return {"numpy": "2.4", "baseline": ["X86_V2"], "dispatch": DISPATCH,
            "features": {name: name in have for name in ["X86_V2", *DISPATCH]}}


def test_avx512_machine_loses_its_avx512_targets_only():
    assert second_pass.widest_targets(report({"X86_V3", "X86_V4", "AVX512_ICL"})) == [
        "X86_V4", "AVX512_ICL"]


def test_avx2_only_machine_loses_avx2():
    assert second_pass.widest_targets(report({"X86_V3"})) == ["X86_V3"]


def test_older_numpy_names_and_other_cpus():
    old = {"numpy": "1.26", "baseline": ["SSE", "SSE2", "SSE3"],
           "dispatch": ["SSE41", "AVX2", "FMA3", "AVX512F", "AVX512_SKX"],
           "features": {"SSE41": True, "AVX2": True, "FMA3": True, "AVX512F": True,
                        "AVX512_SKX": True}}
    assert second_pass.widest_targets(old) == ["AVX512F", "AVX512_SKX"]
    arm = {"numpy": "2.4", "baseline": ["NEON"], "dispatch": ["ASIMDHP", "SVE"],
           "features": {"ASIMDHP": True, "SVE": False}}
    assert second_pass.widest_targets(arm) == ["ASIMDHP"]


def test_this_machine_gets_a_different_kernel_set():
    env, disabled, numpy_report = second_pass.second_environment()
    assert env["TF_ENABLE_ONEDNN_OPTS"] == "0" and env["ONEDNN_MAX_CPU_ISA"] == "SSE41"
    available = [t for t in numpy_report["dispatch"] if numpy_report["features"].get(t)]
    assert bool(disabled) == bool(available)
    after = second_pass.numpy_report(env)
    assert not any(after["features"][name] for name in disabled)


def test_second_pass_caps_onednn_and_names_three_kernel_sets():
    env, _, _ = second_pass.second_environment()
    assert env["ONEDNN_MAX_CPU_ISA"] == "SSE41"
    sets = second_pass.kernel_sets()
    assert len(sets) == 3 and env in sets.values()
    clean = second_pass.default_environment()
    for kernels in sets.values():       # each differs from the first pass in kernel settings only
        changed = {k for k in set(kernels) | set(clean) if kernels.get(k) != clean.get(k)}
        assert changed and changed <= set(second_pass.KERNEL_VARIABLES)


# One float32 matmul and one convolution, printed to the last bit.
_LAST_BITS = """
import os
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import numpy as np
import tensorflow as tf
rng = np.random.default_rng(0)
a = rng.standard_normal((64, 1000)).astype(np.float32)
b = rng.standard_normal((1000, 64)).astype(np.float32)
x = rng.standard_normal((8, 28, 28, 3)).astype(np.float32)
k = rng.standard_normal((3, 3, 3, 16)).astype(np.float32)
print(tf.matmul(a, b).numpy().tobytes().hex()[:4000])
print(tf.nn.conv2d(x, k, 1, "SAME").numpy().tobytes().hex()[:4000])
"""


def _last_bits(env):
    out = subprocess.run([sys.executable, "-c", _LAST_BITS], env=env, check=True,
                         capture_output=True, text=True).stdout.split()
    return {"matmul": out[0], "conv2d": out[1]}


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"),
                    reason="ONEDNN_MAX_CPU_ISA=SSE41 caps x86 code paths only")
def test_second_pass_changes_the_last_bits_of_a_matmul_and_a_convolution():
    """The second pass must really perturb: on this machine the capped kernels give other last
    bits than the default ones (otherwise a cell printing round-off would pass both passes)."""
    default = _last_bits(second_pass.default_environment())
    capped = _last_bits(second_pass.kernel_sets()["oneDNN capped at SSE41"])
    second, _, _ = second_pass.second_environment()
    shaken = _last_bits(second)
    assert default["matmul"] != capped["matmul"] and default["conv2d"] != capped["conv2d"]
    assert default["matmul"] != shaken["matmul"] and default["conv2d"] != shaken["conv2d"]
