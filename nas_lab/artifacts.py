"""Shipped files in ``data/``: the one registry of them, their sha256 manifest, and how to rebuild and load them.

:data:`ARTIFACTS` maps every shipped file (path relative to ``data/``) to an :class:`Artifact`: the command
that rebuilds it, what it holds, and the function that parses it. ``data/manifest.json`` records each built
file's sha256 (and the same rebuild command, written by the command that built it). :func:`load` is the one
way the library, the labs and the tests read a shipped file: it goes through :func:`verified_path`, so a
missing or corrupt file fails loudly, naming the file and the command, instead of producing a silent wrong
answer.

Loaders are named by dotted path (``"module:attribute"``) and imported only when a file is loaded, so this
module imports nothing heavy and nothing of ``nas_lab`` (no import cycle).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MANIFEST_NAME = "manifest.json"

# ---- rebuild commands (the manifest's ``rebuild`` strings; the CLI records these) ----------------------------
# Three runs: 12 sandwich epochs, then a warm restart from those weights with more random subnets per step, then
# another with half of those random subnets at resolutions 24-28 (where inherited accuracy trailed training alone).
SUPERNET_REBUILD = ("nas-lab train-supernet --epochs 12 --warmup-epochs 1 --threads 2 --out runs/supernet && "
                    "nas-lab export-supernet runs/supernet/checkpoint.pt && "
                    "nas-lab train-supernet --init-from data/supernet.safetensors --epochs 6 --warmup-epochs 0 "
                    "--lr 0.04 --num-random 4 --seed 1 --threads 2 --out runs/supernet_phase2 && "
                    "nas-lab export-supernet runs/supernet_phase2/checkpoint.pt && "
                    "nas-lab train-supernet --init-from data/supernet.safetensors --epochs 8 --warmup-epochs 0 "
                    "--lr 0.03 --num-random 4 --num-focus 2 --focus-resolutions 24,28 --seed 2 --threads 1 "
                    "--out runs/supernet_phase3 && "
                    "nas-lab export-supernet runs/supernet_phase3/checkpoint.pt && "
                    "nas-lab train-supernet --init-from data/supernet.safetensors --epochs 5 --warmup-epochs 0 "
                    "--lr 0.03 --num-random 4 --num-focus 2 --focus-resolutions 24,28 --smallest-weight 0 --seed 3 "
                    "--threads 1 --out runs/supernet_phase4 && "
                    "nas-lab export-supernet runs/supernet_phase4/checkpoint.pt")
DATASET_REBUILD = "nas-lab build-accuracy-dataset --n 2000 --seed 0"
PREDICTOR_REBUILD = "nas-lab train-predictor"
LATENCY_REBUILD = "nas-lab measure-latency"
SCRATCH_BENCH_REBUILD = "nas-lab build-scratch-bench --recipe bench --seed 0"
SCRATCH_BENCH_FULL_REBUILD = "nas-lab build-scratch-bench --recipe full --seed 0"


def fashion_mnist_rebuild(file: str) -> str:
    """How to restore one Fashion-MNIST file (they are copied, not built)."""
    return (f"cp ../shared/data/fashion-mnist/{file} data/fashion-mnist/  (or from Debian: apt install "
            f"dataset-fashion-mnist; or git checkout -- data/fashion-mnist/{file})")


class ArtifactError(RuntimeError):
    """A shipped file is missing, corrupt or not in the manifest."""


@dataclass(frozen=True)
class Artifact:
    """One shipped file: its name under ``data/``, the command that rebuilds it, what it holds, and its loader.

    ``loader`` is ``"module:attribute"`` (the attribute may be dotted, e.g. ``"nas_lab.latency:LatencyTable.load"``):
    a function taking the verified path and returning the parsed object.
    """

    name: str
    rebuild: str
    description: str
    loader: str

    def load_function(self) -> Callable[[Path], Any]:
        """The loader, imported now."""
        module, _, attribute = self.loader.partition(":")
        obj: Any = importlib.import_module(module)
        for part in attribute.split("."):
            obj = getattr(obj, part)
        return obj


_FASHION_MNIST = {
    "LICENSE": "Fashion-MNIST licence (MIT)",
    "train-images-idx3-ubyte.gz": "Fashion-MNIST training images (60k)",
    "train-labels-idx1-ubyte.gz": "Fashion-MNIST training labels",
    "t10k-images-idx3-ubyte.gz": "Fashion-MNIST test images (10k)",
    "t10k-labels-idx1-ubyte.gz": "Fashion-MNIST test labels",
}

ARTIFACTS: dict[str, Artifact] = {a.name: a for a in (
    Artifact("supernet.json", SUPERNET_REBUILD, "supernet search space, training config and training log",
             "nas_lab.artifacts:read_json"),
    Artifact("supernet.safetensors", SUPERNET_REBUILD, "pretrained once-for-all supernet weights (safetensors)",
             "nas_lab.evaluate:read_supernet"),
    Artifact("accuracy_dataset.csv", DATASET_REBUILD,
             "random subnets: minival accuracy after BN recalibration, MACs, params, peak memory",
             "nas_lab.accuracy:load_dataset"),
    Artifact("accuracy_predictor.safetensors", PREDICTOR_REBUILD, "accuracy MLP (3x400) on the one-hot encoding",
             "nas_lab.accuracy:MLPPredictor.load"),
    Artifact("latency_table.json", LATENCY_REBUILD, "per-layer latency table, calibrated, with its machine",
             "nas_lab.latency:LatencyTable.load"),
    Artifact("scratch_bench.csv", SCRATCH_BENCH_REBUILD, "subnets trained alone from scratch (bench recipe)",
             "nas_lab.scratch_bench:read_bench"),
    Artifact("scratch_bench_full.csv", SCRATCH_BENCH_FULL_REBUILD,
             "the fidelity subnets trained alone from scratch (full recipe)", "nas_lab.scratch_bench:read_bench"),
    *(Artifact(f"fashion-mnist/{file}", fashion_mnist_rebuild(file), description,
               "nas_lab.artifacts:read_text" if file == "LICENSE" else "nas_lab.data:read_idx")
      for file, description in _FASHION_MNIST.items()),
)}


def artifact(name: str) -> Artifact:
    """The registry entry of ``name``; :class:`ArtifactError` listing the registered names if there is none."""
    try:
        return ARTIFACTS[name]
    except KeyError:
        raise ArtifactError(f"{name!r} is not a shipped artifact; registered: {', '.join(ARTIFACTS)}") from None


def load(name: str) -> Any:
    """The shipped file ``name`` verified against the manifest and parsed by its registered loader.

    Not cached here (callers that keep one copy, like :func:`nas_lab.evaluate.load_supernet`, cache it), so a
    caller may change what it gets without affecting anyone else.
    """
    entry = artifact(name)
    return entry.load_function()(verified_path(name))


def read_json(path: Path) -> Any:
    """Loader of a JSON artifact."""
    return json.loads(Path(path).read_text())


def read_text(path: Path) -> str:
    """Loader of a text artifact."""
    return Path(path).read_text()


# ---- location and verification -----------------------------------------------------------------------------
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
    manifest (default: the registry's). The hash is cached per path, modification time and size.
    """
    if rebuild is None and name in ARTIFACTS:
        rebuild = ARTIFACTS[name].rebuild
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


def record(name: str, rebuild: str | None = None, description: str | None = None) -> str:
    """Add or refresh the manifest entry of ``data/<name>`` (used by the commands that build artifacts).

    ``rebuild`` and ``description`` default to the registry's.
    """
    path = data_dir() / MANIFEST_NAME
    doc = json.loads(path.read_text()) if path.exists() else {"files": {}}
    digest = sha256_of(data_dir() / name)
    entry = ARTIFACTS.get(name)
    rebuild = rebuild or (entry.rebuild if entry else None)
    if rebuild is None:
        raise ArtifactError(f"{name!r} is not a registered artifact: pass its rebuild command")
    doc["files"][name] = {"sha256": digest, "rebuild": rebuild,
                          "description": description or (entry.description if entry else "")}
    doc["files"] = dict(sorted(doc["files"].items()))
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return digest
