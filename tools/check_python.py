"""Say whether this Python can run the book (`make` runs this first), and what to install if not.

The range is pyproject.toml's requires-python. Written for any Python 3, so that an old one gets
this message rather than a resolver error from pip.
"""

import re
import sys
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


def supported():
    """(lowest, highest) minor versions of Python 3 that requires-python allows."""
    spec = re.search(r'^requires-python\s*=\s*"([^"]+)"', PYPROJECT.read_text(encoding="utf-8"), re.M)
    low = re.search(r">=\s*3\.(\d+)", spec.group(1))
    high = re.search(r"<\s*3\.(\d+)", spec.group(1))
    return int(low.group(1)), int(high.group(1)) - 1


def main():
    low, high = supported()
    major, minor = sys.version_info[:2]
    if major == 3 and low <= minor <= high:
        return 0
    wanted = ", ".join(f"3.{m}" for m in range(low, high + 1))
    print(f"Python {major}.{minor} ({sys.executable}) cannot run the book: TensorFlow 2.21 and its "
          f"pinned packages need Python {wanted}.\n"
          f"Install one of them (python.org, your package manager, or pyenv), then run make with it, "
          f"e.g. `make PYTHON=python3.{low} ...`; remove .venv first if it was made with another Python.",
          file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
