"""Package the job for spark-submit: `dist/segmentation-pyfiles.zip` for `--py-files`, optionally a wheel.

    python scripts/package.py                 # dist/segmentation-pyfiles.zip
    python scripts/package.py --wheel         # and dist/spark_customer_segmentation-<version>-*.whl
    python scripts/package.py --dist /tmp/d   # somewhere else (e.g. when the repo is mounted read-only)

The zip holds the `segmentation` and `jobs` packages (Python sources only: no tests, no bundled data), so
the driver and the executors import them from the zip, never from the repo's working directory. It is
reproducible: the same sources give the same bytes (sorted entries, fixed timestamps), so its SHA-256
identifies a build.
Standard library only: it runs under any Python 3.10+, including the one in the `apache/spark` image.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("segmentation", "jobs")
ZIP_NAME = "segmentation-pyfiles.zip"
# the bundled sample data is for local runs; on a cluster pass --input (executors cannot read inside a zip)
EXCLUDED_DIRS = {"__pycache__", "data"}
FIXED_TIME = (1980, 1, 1, 0, 0, 0)


#: What the zip holds: the modules and the report's templates (a driver in cluster mode renders the report)
SUFFIXES = {".py", ".j2", ".css"}


def package_sources(repo: Path) -> list[Path]:
    """The modules and templates of the packages, relative to the repo, in a stable order."""
    sources = []
    for package in PACKAGES:
        root = repo / package
        if not (root / "__init__.py").is_file():
            raise SystemExit(f"package.py: error: {root}/__init__.py not found; run it from a checkout")
        for path in sorted(p for p in root.rglob("*") if p.suffix in SUFFIXES):
            relative = path.relative_to(repo)
            if not EXCLUDED_DIRS.intersection(relative.parts[1:-1]):
                sources.append(relative)
    return sources


def build_zip(repo: Path, dist: Path) -> Path:
    """Write the zip atomically (a half-written zip never replaces a good one); every module must compile."""
    dist.mkdir(parents=True, exist_ok=True)
    target = dist / ZIP_NAME
    fd, tmp_name = tempfile.mkstemp(prefix=".pyfiles-", suffix=".zip", dir=dist)
    os.close(fd)
    try:
        with zipfile.ZipFile(tmp_name, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for relative in package_sources(repo):
                source = (repo / relative).read_bytes()
                if relative.suffix == ".py":  # a syntax error fails the build, not the cluster job
                    compile(source, str(relative), "exec")
                info = zipfile.ZipInfo(relative.as_posix(), date_time=FIXED_TIME)
                info.external_attr = 0o644 << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                zf.writestr(info, source)
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return target


def build_wheel(repo: Path, dist: Path) -> Path:
    """A wheel of the project without its dependencies (for images and `pip install` on the nodes).

    Built from a copy of the project files, so pip leaves no build/ or egg-info behind in the repo.
    """
    with tempfile.TemporaryDirectory(prefix="segmentation-wheel-") as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        for name in ("pyproject.toml", "README.md"):
            if (repo / name).is_file():
                shutil.copy2(repo / name, src / name)
        skip = shutil.ignore_patterns("__pycache__", "*.pyc")
        for package in PACKAGES:
            shutil.copytree(repo / package, src / package, ignore=skip)
        out = Path(tmp) / "wheel"
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(out), str(src)],
            check=True,
        )
        (wheel,) = out.glob("*.whl")
        target = dist / wheel.name
        shutil.copy2(wheel, target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="package.py", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--dist", default=str(REPO / "dist"), help="output folder (default: the repo's dist/)"
    )
    parser.add_argument("--wheel", action="store_true", help="also build a wheel (pip wheel --no-deps)")
    args = parser.parse_args(argv)
    dist = Path(args.dist).resolve()
    target = build_zip(REPO, dist)
    with zipfile.ZipFile(target) as zf:
        names = zf.namelist()
    digest = hashlib.sha256(target.read_bytes()).hexdigest()
    counts = ", ".join(f"{p} {sum(n.startswith(p + '/') for n in names)}" for p in PACKAGES)
    print(f"{target}: {len(names)} files ({counts}), sha256 {digest[:16]}")
    if args.wheel:
        print(build_wheel(REPO, dist))
    return 0


if __name__ == "__main__":
    sys.exit(main())
