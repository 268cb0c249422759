"""Run a command (the strict nbval pass) again with a different set of numeric kernels.

    python tools/second_pass.py -- .venv/bin/pytest --nbval ... notebooks/01_transform.ipynb
    python tools/second_pass.py --show          # only print the settings this machine gets

The stored outputs must not depend on which CPU kernels computed them. This tool changes three
kernel choices and runs the command with them changed:

- oneDNN's instruction set, capped below what the CPU has: ``ONEDNN_MAX_CPU_ISA=SSE41`` (oneDNN
  then runs its SSE4.1 code instead of its AVX2 or AVX-512 code: other vector widths, other
  blockings, other summation orders). This is the setting that changes results on an AVX2
  machine as well as on an AVX-512 one; ``tests/test_second_pass.py`` checks on the machine it
  runs on that it changes the last bits of a float32 matmul and a convolution;
- TensorFlow's oneDNN graph rewrites: ``TF_ENABLE_ONEDNN_OPTS=0`` (TensorFlow's own Eigen kernels
  where it has them; on an AVX-512 machine this alone moves results, on an AVX2 one it did not);
- NumPy's widest SIMD code paths on this machine: ``NPY_DISABLE_CPU_FEATURES``, worked out from
  NumPy's own runtime report (``__cpu_baseline__``, ``__cpu_dispatch__``, ``__cpu_features__``).
  NumPy can only switch off *dispatch targets*, code paths chosen at run time, never the baseline
  it was compiled for. On an AVX-512 machine we switch off the AVX-512 targets (NumPy then runs
  its AVX2 kernels); on a machine without AVX-512 we switch off every dispatch target it has
  (on an AVX2-only machine NumPy then runs its baseline SSE kernels). Either way NumPy computes
  with narrower vectors than in the first pass, so sums come out in a different order.

It prints what it changed, then runs the command with that environment and returns its exit
status. ``KERNEL_SETS`` names the kernel sets ``tools/stability.py`` compares, this pass among them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

# Asked of a fresh interpreter, without any inherited NPY_DISABLE_CPU_FEATURES.
_REPORT = """
import json, numpy
try:
    from numpy._core import _multiarray_umath as umath
except ImportError:  # NumPy 1.x
    from numpy.core import _multiarray_umath as umath
print(json.dumps({"numpy": numpy.__version__, "baseline": list(umath.__cpu_baseline__),
                  "dispatch": list(umath.__cpu_dispatch__),
                  "features": {k: bool(v) for k, v in umath.__cpu_features__.items()}}))
"""


def numpy_report(env: dict[str, str] | None = None) -> dict:
    """NumPy's runtime report (version, baseline, dispatch targets, CPU features) of a fresh
    interpreter run with ``env``."""
    out = subprocess.run([sys.executable, "-c", _REPORT], env=env, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out)


def widest_targets(report: dict) -> list[str]:
    """The dispatch targets to switch off: the AVX-512 family if the CPU has any of it, else every
    dispatch target the CPU supports (the baseline can never be switched off)."""
    available = [t for t in report["dispatch"] if report["features"].get(t)]
    avx512 = [t for t in available if "512" in t or t == "X86_V4"]
    return avx512 or available


# The kernel settings of this tool and of tools/stability.py: variables a kernel set sets.
KERNEL_VARIABLES = ("ONEDNN_MAX_CPU_ISA", "TF_ENABLE_ONEDNN_OPTS", "NPY_DISABLE_CPU_FEATURES")
ONEDNN_CAP = "SSE41"


def default_environment() -> dict[str, str]:
    """This process's environment without any of the kernel settings: the first pass's kernels."""
    return {k: v for k, v in os.environ.items() if k not in KERNEL_VARIABLES}


def second_environment() -> tuple[dict[str, str], list[str], dict]:
    """The environment of the second pass, the NumPy targets it disables, NumPy's report."""
    clean = default_environment()
    report = numpy_report(clean)
    disabled = widest_targets(report)
    env = dict(clean, ONEDNN_MAX_CPU_ISA=ONEDNN_CAP, TF_ENABLE_ONEDNN_OPTS="0")
    if disabled:
        env["NPY_DISABLE_CPU_FEATURES"] = " ".join(disabled)
    return env, disabled, report


def kernel_sets() -> dict[str, dict[str, str]]:
    """The three kernel sets an author's stability check runs a notebook under, by name: each
    environment differs from the default (stored) one in its kernel settings only."""
    clean = default_environment()
    second, _, _ = second_environment()
    return {
        f"oneDNN capped at {ONEDNN_CAP}": dict(clean, ONEDNN_MAX_CPU_ISA=ONEDNN_CAP),
        "oneDNN rewrites off": dict(clean, TF_ENABLE_ONEDNN_OPTS="0"),
        "second pass (all three)": second,
    }


def cpu_flags() -> set[str]:
    """The CPU's instruction-set flags as Linux reports them (empty where /proc/cpuinfo is not)."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def onednn_lost() -> str:
    """Which of the CPU's vector extensions oneDNN no longer uses under the cap."""
    wider = [name for name in ("avx", "avx2", "avx512f", "amx_tile") if name in cpu_flags()]
    return " ".join(name.upper() for name in wider) or "none known (not an x86 CPU?)"


def describe(env: dict[str, str], disabled: list[str], report: dict) -> str:
    after = numpy_report(env)
    lost = [name for name, on in report["features"].items() if on and not after["features"][name]]
    lines = [
        f"second numeric configuration (NumPy {report['numpy']}, baseline "
        f"{' '.join(report['baseline'])}, dispatch targets {' '.join(report['dispatch'])}):",
        f"  ONEDNN_MAX_CPU_ISA={env['ONEDNN_MAX_CPU_ISA']}  (oneDNN's code paths wider than "
        f"{env['ONEDNN_MAX_CPU_ISA']} off: {onednn_lost()})",
        "  TF_ENABLE_ONEDNN_OPTS=0",
        f"  NPY_DISABLE_CPU_FEATURES=\"{env.get('NPY_DISABLE_CPU_FEATURES', '')}\""
        + ("" if disabled else "  (this NumPy has no dispatch target to switch off here)"),
        f"  NumPy code paths now off: {' '.join(lost) or 'none'}",
    ]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    env, disabled, report = second_environment()
    print(describe(env, disabled, report), flush=True)
    if argv[:1] == ["--show"]:
        return 0
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not argv:
        print("usage: second_pass.py [--show] -- COMMAND ...", file=sys.stderr)
        return 2
    return subprocess.run(argv, env=env).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
