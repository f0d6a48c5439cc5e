"""Packaging and shipped data: environment.yml vs pyproject.toml, the `nas-lab` command, the sha256 manifest."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from nas_lab import artifacts

ROOT = Path(__file__).resolve().parents[1]
CONDA_TO_PYPI = {"pytorch": "torch"}  # conda-forge names that differ from the import/PyPI name
NOT_PACKAGES = {"python", "pip"}


def _normalise(name: str) -> str:
    """PEP 503 name normalisation: lower case, runs of -_. become one dash."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_name(req: str) -> str:
    return _normalise(re.split(r"[\s<>=!~;\[]", req.strip(), maxsplit=1)[0])


def pyproject_packages() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        reqs += extra
    return {_requirement_name(r) for r in reqs}


def environment_packages() -> set[str]:
    """Package names in environment.yml (conda and pip sections); a small parser, no YAML library needed."""
    names, in_deps = set(), False
    for line in (ROOT / "environment.yml").read_text().splitlines():
        if re.match(r"^\S", line):  # a top-level key: name, channels, dependencies
            in_deps = line.startswith("dependencies:")
        if not in_deps:
            continue
        m = re.match(r"^\s*-\s+([^\s#:]+)\s*(#.*)?$", line)
        if not m or m.group(1).startswith("-"):  # skip "- -e ." and section headers such as "- pip:"
            continue
        name = _requirement_name(m.group(1))
        name = CONDA_TO_PYPI.get(name, name)
        if name not in NOT_PACKAGES:
            names.add(name)
    return names


def test_environment_yml_matches_pyproject() -> None:
    env, py = environment_packages(), pyproject_packages()
    assert py, "no dependencies parsed from pyproject.toml"
    assert env == py, f"only in environment.yml: {sorted(env - py)}; only in pyproject.toml: {sorted(py - env)}"
    text = (ROOT / "environment.yml").read_text()
    assert "conda-forge" in text and "-e ." in text


def test_name_normalisation() -> None:
    assert _requirement_name("Torch_Vision>=0.17") == "torch-vision"
    assert _requirement_name("nbgrader >= 0.9.6") == "nbgrader"
    assert _requirement_name("foo[bar]; python_version>'3'") == "foo"


def _nas_lab(*args: str, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).parent / "nas-lab"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "nas_lab.cli"]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=300)


def test_info_json(tmp_path: Path) -> None:
    proc = _nas_lab("info", "--json", cwd=tmp_path)  # from an unrelated folder
    assert proc.returncode == 0, proc.stderr + proc.stdout
    info = json.loads(proc.stdout)
    import nas_lab

    assert info["version"] == nas_lab.__version__
    assert info["artifacts"] and all(v == "ok" for v in info["artifacts"].values()), info["artifacts"]
    assert set(info["checksums"]) == set(info["artifacts"])


def test_manifest_verifies() -> None:
    manifest = artifacts.load_manifest()
    assert any(name.startswith("fashion-mnist/") for name in manifest)
    for name, entry in manifest.items():
        assert re.fullmatch(r"[0-9a-f]{64}", entry["sha256"]), name
        assert entry["rebuild"], f"{name} has no rebuild command"
    report = artifacts.verify_all()
    assert all(v == "ok" for v in report.values()), report


SMALL = "fashion-mnist/t10k-labels-idx1-ubyte.gz"  # the smallest data file (about 5 kB)


@pytest.fixture()
def data_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """NAS_LAB_DATA -> a copy of data/ holding the manifest and one small file (mtime preserved)."""
    copy = tmp_path / "data"
    (copy / "fashion-mnist").mkdir(parents=True)
    shutil.copy2(artifacts.data_dir() / artifacts.MANIFEST_NAME, copy / artifacts.MANIFEST_NAME)
    shutil.copy2(artifacts.data_dir() / SMALL, copy / SMALL)
    artifacts.verified_path(SMALL)  # the original is verified (and cached) first
    monkeypatch.setenv("NAS_LAB_DATA", str(copy))
    return copy


def test_copy_verifies(data_copy: Path) -> None:
    assert artifacts.verified_path(SMALL) == data_copy / SMALL


def test_corrupted_copy_names_file_and_rebuild_command(data_copy: Path) -> None:
    path = data_copy / SMALL
    stat = path.stat()
    raw = bytearray(path.read_bytes())
    raw[100] ^= 0xFF
    path.write_bytes(bytes(raw))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same size and mtime: only the hash can tell
    rebuild = artifacts.load_manifest()[SMALL]["rebuild"]
    with pytest.raises(artifacts.ArtifactError) as err:
        artifacts.verified_path(SMALL)
    assert str(path) in str(err.value) and "corrupt" in str(err.value) and rebuild in str(err.value)

    proc = _nas_lab("info", env={**os.environ, "NAS_LAB_DATA": str(data_copy)})
    assert proc.returncode != 0
    assert SMALL in proc.stdout and "corrupt" in proc.stdout and rebuild in proc.stdout


def test_missing_file_names_rebuild_command(data_copy: Path) -> None:
    (data_copy / SMALL).unlink()
    with pytest.raises(artifacts.ArtifactError, match="missing; rebuild it with"):
        artifacts.verified_path(SMALL)
    with pytest.raises(artifacts.ArtifactError, match="not in data/manifest.json"):
        artifacts.verified_path("fashion-mnist/nope.gz")
