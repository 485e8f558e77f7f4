"""The project's runtime dependencies, from pyproject.toml (the one list), as pip requirement lines.

    python3 docker/runtime_requirements.py [--without pyspark] [--pyproject PATH] > requirements.txt

docker/Dockerfile installs them (without pyspark: the image has Spark's own), and so does the Kubernetes image
of docs/cluster.md: no image carries a copied list that drifts from pyproject.toml. tests/test_docker_compose.py
checks that every import of the library resolves from this list.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # Python 3.10 (the Spark images): the same parser from PyPI
    import tomli as tomllib


def distribution(requirement: str) -> str:
    """The distribution a requirement line names (`pandas>=2.0,<3` -> `pandas`)."""
    return re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0].strip()


def runtime_requirements(pyproject: Path, without: tuple[str, ...] = ()) -> list[str]:
    """`[project].dependencies` of `pyproject`, minus the distributions named in `without`."""
    dependencies = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]["dependencies"]
    skip = {name.lower() for name in without}
    return [d for d in dependencies if distribution(d).lower() not in skip]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--pyproject", type=Path, default=Path(__file__).resolve().parent.parent / "pyproject.toml"
    )
    parser.add_argument("--without", action="append", default=[], help="a distribution to leave out")
    args = parser.parse_args(argv)
    print("\n".join(runtime_requirements(args.pyproject, tuple(args.without))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
