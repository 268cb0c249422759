"""tools/second_pass.py: which NumPy SIMD targets the second nbval pass switches off."""

import importlib.util
from pathlib import Path

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
    assert env["TF_ENABLE_ONEDNN_OPTS"] == "0"
    available = [t for t in numpy_report["dispatch"] if numpy_report["features"].get(t)]
    assert bool(disabled) == bool(available)
    after = second_pass.numpy_report(env)
    assert not any(after["features"][name] for name in disabled)
