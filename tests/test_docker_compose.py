"""docker-compose.yml without a Docker engine: `docker-compose config` validates and resolves it.

Needs Debian's docker-compose (apt-get install docker-compose); without it these tests are skipped, except
in CI (CI set), where a missing docker-compose fails them.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest
import yaml

from .conftest import REPO

COMPOSE_FILE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "docker" / "Dockerfile"
ENV_EXAMPLE = REPO / ".env.example"
SERVICES = {"spark-master", "spark-worker-1", "spark-worker-2", "submit"}
WORKERS = ("spark-worker-1", "spark-worker-2")
TEST_SECRET = "secret-from-the-env-file-0123456789abcdef"


@pytest.fixture(scope="module")
def docker_compose():
    path = shutil.which("docker-compose")
    if path is None:
        message = "docker-compose not installed (apt-get install docker-compose)"
        if os.environ.get("CI"):
            pytest.fail(message + "; CI must validate docker-compose.yml")
        pytest.skip(message)
    return path


def compose(docker_compose: str, env_file, *args: str) -> subprocess.CompletedProcess:
    """docker-compose on the repo's file, with only the given env file (never a developer's real .env)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPARK_", "DATA_DIR", "COMPOSE_"))}
    cmd = [
        docker_compose,
        "--project-directory",
        str(REPO),
        "-f",
        str(COMPOSE_FILE),
        "--env-file",
        str(env_file),
    ]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, env=env, timeout=60)


def pyspark_pin() -> str:
    """The default pin (constraints.txt), inside pyproject.toml's supported range."""
    match = re.search(r"^pyspark==([0-9][^\s]*)$", (REPO / "constraints.txt").read_text(), flags=re.MULTILINE)
    assert match, "constraints.txt pins no pyspark==X"
    assert '"pyspark>=3.5,<4.4"' in (REPO / "pyproject.toml").read_text()
    return match.group(1)


@pytest.fixture(scope="module")
def resolved(docker_compose, tmp_path_factory):
    """The configuration as docker-compose resolves it, with a known secret in the env file."""
    env_file = tmp_path_factory.mktemp("compose") / "test.env"
    env_file.write_text(f"SPARK_AUTH_SECRET={TEST_SECRET}\n")
    result = compose(docker_compose, env_file, "config")
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def test_config_is_valid_with_the_example_env_file(docker_compose):
    result = compose(docker_compose, ENV_EXAMPLE, "config", "-q")
    assert result.returncode == 0, result.stderr


def test_a_missing_secret_is_a_clear_error(docker_compose, tmp_path):
    empty = tmp_path / "empty.env"
    empty.write_text("")
    result = compose(docker_compose, empty, "config", "-q")
    assert result.returncode != 0
    assert "set SPARK_AUTH_SECRET in .env (copy .env.example)" in result.stderr


def test_the_secret_comes_from_the_env_file(resolved):
    assert set(resolved["services"]) == SERVICES
    for name, service in resolved["services"].items():
        assert service["environment"]["SPARK_AUTH_SECRET"] == TEST_SECRET, name
    # and nowhere in the file itself; the example holds only the placeholder the services refuse
    assert "SPARK_AUTH_SECRET: ${SPARK_AUTH_SECRET:?" in COMPOSE_FILE.read_text()
    assert re.search(r"^SPARK_AUTH_SECRET=change-me$", ENV_EXAMPLE.read_text(), re.M)
    assert '"$SPARK_AUTH_SECRET" == change-me' in (REPO / "docker" / "spark-node.sh").read_text()


def test_spark_image_matches_the_pyspark_pin():
    version = pyspark_pin()
    (base,) = re.findall(r"^FROM\s+(\S+)", DOCKERFILE.read_text(), re.M)
    assert base == f"apache/spark:{version}-scala2.13-java17-python3-ubuntu"
    images = {name: s["image"] for name, s in yaml.safe_load(COMPOSE_FILE.read_text())["services"].items()}
    assert set(images) == SERVICES
    assert all(image.endswith(f":{version}") for image in images.values()), images


def test_ports_are_published_on_loopback_only(resolved):
    published = []
    for name, service in resolved["services"].items():
        for port in service.get("ports", []):
            host_ip = port.get("host_ip") if isinstance(port, dict) else port.split(":")[0]
            published.append((name, host_ip))
    assert {name for name, _ in published} == SERVICES
    assert all(host_ip == "127.0.0.1" for _, host_ip in published), published


def test_workers_restart_on_failure_and_mount_the_repo_read_only(resolved):
    services = resolved["services"]
    for name in WORKERS:
        assert services[name]["restart"] == "on-failure"
    for name, service in services.items():
        repo_mounts = [v for v in service["volumes"] if _source(v) == str(REPO)]
        assert repo_mounts, f"{name}: the repo is not mounted"
        assert all(_read_only(v) for v in repo_mounts), f"{name}: the repo is mounted writable"
    for name in (*WORKERS, "submit"):  # executors and the driver see the same data and output
        targets = {_target(v) for v in services[name]["volumes"]}
        assert {"/data", "/output"} <= targets, name


def _source(volume) -> str:
    return volume["source"] if isinstance(volume, dict) else volume.split(":")[0]


def _target(volume) -> str:
    return volume["target"] if isinstance(volume, dict) else volume.split(":")[1]


def _read_only(volume) -> bool:
    return bool(volume.get("read_only")) if isinstance(volume, dict) else volume.split(":")[2:] == ["ro"]


def test_every_import_of_the_library_resolves_from_the_image_requirements():
    """The images install pyproject's runtime dependencies (docker/runtime_requirements.py) and pyspark (the
    image's): every module segmentation/ and jobs/ import is the standard library's, the project's own, or
    provided by one of those distributions (as installed here: packages_distributions maps them)."""
    import ast
    import importlib.metadata
    import sys

    sys.path.insert(0, str(REPO / "docker"))
    try:
        from runtime_requirements import distribution, runtime_requirements
    finally:
        sys.path.pop(0)
    listed = {
        distribution(r).lower().replace("_", "-") for r in runtime_requirements(REPO / "pyproject.toml")
    }
    assert "pyspark" in listed and "jinja2" in listed
    providers = importlib.metadata.packages_distributions()
    imported: dict[str, set[str]] = {}
    for path in [*(REPO / "segmentation").rglob("*.py"), *(REPO / "jobs").glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                imported.setdefault(name.split(".")[0], set()).add(path.name)
    third_party = {
        top: files
        for top, files in imported.items()
        if top not in sys.stdlib_module_names and top not in ("segmentation", "jobs", "__future__")
    }
    # tomli only where tomllib is missing (Python 3.10): the Dockerfile installs it itself; py4j is pyspark's
    # own bridge, pinned by it
    third_party.pop("tomli", None)
    third_party.pop("py4j", None)
    missing = {
        top: sorted(files)
        for top, files in third_party.items()
        if not {d.lower().replace("_", "-") for d in providers.get(top, [])} & listed
    }
    assert not missing, f"imported but not in pyproject's runtime dependencies: {missing}"
    assert {"pyspark", "pandas", "jinja2", "pydantic", "sklearn", "duckdb"} <= set(third_party)
