"""Shipped files in ``data/``: where they are, their sha256 manifest, and how to rebuild them.

Every artifact the labs load (data set, supernet weights, accuracy data set, predictor weights, latency
table) is listed in ``data/manifest.json`` with its sha256 and the exact command that rebuilds it.
Loading goes through :func:`verified_path`, so a missing or corrupt file fails loudly, naming the file
and the command, instead of producing a silent wrong answer.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

MANIFEST_NAME = "manifest.json"


class ArtifactError(RuntimeError):
    """A shipped file is missing, corrupt or not in the manifest."""


def data_dir() -> Path:
    """The folder holding shipped artifacts: ``$NAS_LAB_DATA`` if set, else ``<repo>/data``.

    Found through the package location, so it works from any working directory (nbgrader runs
    notebooks from ``autograded/<student>/<lab>/``).
    """
    env = os.environ.get("NAS_LAB_DATA")
    return Path(env) if env else Path(__file__).resolve().parent.parent / "data"


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def load_manifest() -> dict[str, dict[str, str]]:
    """The manifest: relative path -> {"sha256", "rebuild", "description"}."""
    path = data_dir() / MANIFEST_NAME
    if not path.exists():
        raise ArtifactError(f"{path} is missing; restore it with `git checkout -- data/{MANIFEST_NAME}`")
    return json.loads(path.read_text())["files"]


# absolute path -> (sha256 expected, mtime, size) at which it was last verified; keyed by the full path so a
# copy elsewhere (NAS_LAB_DATA) with the same mtime is still hashed
_verified: dict[str, tuple[str, float, int]] = {}


def verified_path(name: str, rebuild: str | None = None) -> Path:
    """Absolute path of the shipped file ``name`` (relative to ``data/``), checked against the manifest.

    Raises :class:`ArtifactError` naming the file and the command that rebuilds it when the file is
    missing or its sha256 differs. ``rebuild`` is the command to name for a file not (yet) in the
    manifest. The hash is cached per path, modification time and size.
    """
    try:
        manifest = load_manifest()
    except ArtifactError as err:
        if not rebuild:
            raise
        raise ArtifactError(f"{data_dir() / name} cannot be verified ({err}); build it with: {rebuild}") from None
    if name not in manifest:
        hint = f"; build it with: {rebuild}" if rebuild else ""
        raise ArtifactError(f"{data_dir() / name} is missing (not in data/{MANIFEST_NAME}){hint}")
    entry = manifest[name]
    path = data_dir() / name
    how = f"rebuild it with: {entry['rebuild']}"
    if not path.exists():
        raise ArtifactError(f"{path} is missing; {how}")
    stat = path.stat()
    key = (entry["sha256"], stat.st_mtime, stat.st_size)
    if _verified.get(str(path)) != key:
        digest = sha256_of(path)
        if digest != entry["sha256"]:
            raise ArtifactError(
                f"{path} is corrupt (sha256 {digest[:12]}..., manifest says {entry['sha256'][:12]}...); {how}"
            )
        _verified[str(path)] = key
    return path


def verify_all() -> dict[str, str]:
    """Check every manifest entry; returns name -> 'ok' or the error message."""
    report = {}
    for name in load_manifest():
        try:
            verified_path(name)
            report[name] = "ok"
        except ArtifactError as err:
            report[name] = str(err)
    return report


def record(name: str, rebuild: str, description: str) -> str:
    """Add or refresh the manifest entry of ``data/<name>`` (used by the commands that build artifacts)."""
    path = data_dir() / MANIFEST_NAME
    doc = json.loads(path.read_text()) if path.exists() else {"files": {}}
    digest = sha256_of(data_dir() / name)
    doc["files"][name] = {"sha256": digest, "rebuild": rebuild, "description": description}
    doc["files"] = dict(sorted(doc["files"].items()))
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return digest
