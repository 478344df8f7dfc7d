"""TIQU_BASE_MODEL_REVISION: a hub base model loads at the pinned commit.

A hub cache with two snapshots of one repo (two different tiny models, the
main branch at the first) is built in a temporary HF_HOME; the loads run in a
subprocess with that HF_HOME and the hub offline, as a worker with a filled
cache volume would.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from core.errors import ConfigError
from core.settings import Settings

REPO = "tiqu-test/tiny-chat"
REV_A = "a" * 40
REV_B = "0123456789abcdef0123456789abcdef01234567"
MISSING = "f" * 40

_PROBE = r"""
import json, sys
from core.errors import ModelNotFound
from core.settings import Settings
from inference.models import load_base, model_fingerprint

out = {}
for key, rev in (("pinned", sys.argv[1]), ("main", None), ("missing", sys.argv[2])):
    try:
        model, tok, source = load_base(Settings(base_model=sys.argv[3], base_model_revision=rev,
                                                dtype="float32", device="cpu"))
    except ModelNotFound as err:
        out[key] = {"error": str(err)}
        continue
    out[key] = {"source": source, "fingerprint": model_fingerprint(source),
                "weight": float(model.get_input_embeddings().weight.double().sum())}
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def hub_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.tiny import build_model

    home = tmp_path_factory.mktemp("hf_home")
    repo = home / "hub" / ("models--" + REPO.replace("/", "--"))
    for rev, seed in ((REV_A, 0), (REV_B, 1)):
        built = build_model(tmp_path_factory.mktemp(f"seed{seed}") / "m", "bpe", seed=seed)
        shutil.copytree(built, repo / "snapshots" / rev)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(REV_A)
    return home


def _weight(folder: Path) -> float:
    from safetensors.torch import load_file

    tensors = load_file(str(folder / "model.safetensors"))
    name = next(k for k in tensors if k.endswith("embed_tokens.weight"))
    return float(tensors[name].double().sum())


def test_a_pinned_revision_loads_that_commit_and_fingerprints_apart(hub_home: Path) -> None:
    env = {**os.environ, "HF_HOME": str(hub_home), "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": str(Path(__file__).parents[1])}
    env.pop("HF_HUB_CACHE", None)
    run = subprocess.run([sys.executable, "-c", _PROBE, REV_B, MISSING, REPO], env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    snapshots = hub_home / "hub" / ("models--" + REPO.replace("/", "--")) / "snapshots"
    # the pinned commit's weights, not the main branch's
    assert out["pinned"]["weight"] == pytest.approx(_weight(snapshots / REV_B))
    assert out["main"]["weight"] == pytest.approx(_weight(snapshots / REV_A))
    assert out["pinned"]["weight"] != pytest.approx(out["main"]["weight"])
    # the fingerprint hashes the snapshot served, so adapters of one revision are
    # told apart from another's (core.adapters.check_compatible)
    assert Path(out["pinned"]["source"]) == snapshots / REV_B
    assert Path(out["main"]["source"]) == snapshots / REV_A
    assert out["pinned"]["fingerprint"] != out["main"]["fingerprint"]
    # a commit the cache lacks (and the hub is offline): a clear error naming it
    assert "error" in out["missing"]
    assert f"at revision {MISSING}" in out["missing"]["error"]


@pytest.mark.parametrize("rev", ["main", "v1.0", "A" * 40, "a" * 39, ""])
def test_a_revision_must_be_a_commit_hash(rev: str) -> None:
    with pytest.raises(ConfigError, match="base_model_revision must be a 40-character"):
        Settings(base_model=REPO, base_model_revision=rev)


def test_a_revision_is_refused_for_the_default_model_and_local_folders(tmp_path: Path) -> None:
    from inference.models import resolve_base_model

    for base in (Settings().base_model, str(tmp_path)):
        with pytest.raises(ConfigError, match="pins a hub model's commit"):
            resolve_base_model(Settings(base_model=base, base_model_revision=REV_A))
