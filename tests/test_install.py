"""``pip install 'tiqu[producer]'`` in a fresh virtualenv: what an upstream system
gets is enough to enqueue, and holds no torch, transformers or celery.

Builds a virtualenv without system site-packages under tmp_path and installs a
copy of the source tree from the package index (PyPI, or the configured
mirror); about half a minute. Part of ``make test``: a failing install fails
the test, it is never skipped.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import redis

from tests.conftest import ROOT

pytestmark = pytest.mark.network

#: Distributions a producer must not pull in (names as pip lists them, lower case).
HEAVY = {"torch", "transformers", "peft", "accelerate", "celery", "kombu", "celery-batches",
         "flower", "matplotlib", "numpy", "prometheus-client", "faker", "gguf", "safetensors"}


def _source_copy(dest: Path) -> Path:
    """The files a build needs, so building leaves nothing in the working tree."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, dest / name)
    for pattern in project["tool"]["setuptools"]["packages"]["find"]["include"]:
        top = pattern.rstrip("*")
        if (ROOT / top).is_dir():
            shutil.copytree(ROOT / top, dest / top,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dest


@pytest.fixture(scope="module")
def producer_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("install")
    (base / "src").mkdir()
    src = _source_copy(base / "src")
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q",
                          "--disable-pip-version-check", f"{src}[producer]"],
                         capture_output=True, text=True, timeout=900)
    assert pip.returncode == 0, f"pip install '.[producer]' failed:\n{pip.stderr[-4000:]}"
    return venv


def test_producer_extra_installs_no_heavy_dependencies(producer_venv: Path) -> None:
    listed = subprocess.run([str(producer_venv / "bin" / "python"), "-m", "pip", "list",
                             "--format", "json"], capture_output=True, text=True, check=True)
    installed = {p["name"].lower().replace("_", "-") for p in json.loads(listed.stdout)}
    assert {"tiqu", "redis", "pydantic", "pydantic-settings"} <= installed
    assert not installed & HEAVY, f"a producer install pulled in {sorted(installed & HEAVY)}"


def test_fresh_producer_install_enqueues(producer_venv: Path, redis_db: redis.Redis,
                                         redis_url: str, tmp_path: Path) -> None:
    script = (
        "import sys\n"
        "from producer import Client\n"
        "from producer.client import redis_client\n"
        "import producer.cli\n"
        "client = Client(redis_client(sys.argv[1]))\n"
        "print(client.submit('ext-1', 'text').task_id)\n"
        "assert 'torch' not in sys.modules and 'celery' not in sys.modules\n"
    )
    # Run outside the repository, so the installed package is the one imported.
    out = subprocess.run([str(producer_venv / "bin" / "python"), "-c", script, redis_url],
                         capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    (task_id,) = out.stdout.split()
    (raw,) = redis_db.lrange("extract", 0, -1)
    assert json.loads(raw)["headers"]["id"] == task_id
    # The CLI's producer command runs without celery/kombu installed.
    (tmp_path / "in.txt").write_text("one\ntwo\n", encoding="utf-8")
    cli = subprocess.run([str(producer_venv / "bin" / "tiqu"), "--redis-url", redis_url,
                          "enqueue", "in.txt"],
                         capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert cli.returncode == 0, cli.stderr[-3000:]
    assert redis_db.llen("extract") == 3


def test_dev_extra_holds_every_extra_and_the_tools() -> None:
    """``make test`` / ``make demo`` install ``.[dev]``: it must cover every command."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    (self_ref,) = [d for d in extras["dev"] if d.startswith("tiqu[")]
    included = set(self_ref[len("tiqu["):-1].split(","))
    assert {"producer", "worker", "train", "flower", "review", "xlsx"} <= included
    names = {d.split("[")[0].split(">")[0].split("<")[0].split("=")[0].strip().lower()
             for d in extras["dev"]}
    assert {"pytest", "selenium", "import-linter", "ruff", "mypy", "pyyaml"} <= names
    base = {d.split(">")[0].split("[")[0].lower() for d in project["dependencies"]}
    assert base == {"redis", "pydantic", "pydantic-settings"}
