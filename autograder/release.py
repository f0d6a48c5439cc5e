"""Regenerate the student notebooks ``labs/<lab>/<lab>.ipynb`` from ``solutions/<lab>/<lab>.ipynb``.

Runs nbgrader's ``generate_assignment`` (through its Python API, in this process) for every lab, or for
the labs named on the command line. It removes solutions and hidden tests, locks the cells marked
locked, records checksums, strips outputs and writes the result to ``labs/``. Running it twice gives
the same files. ``make release`` calls it; ``tests/test_notebooks.py`` reuses :func:`generate` in a
temporary course to check that ``labs/`` is up to date.

    python autograder/release.py                 # all labs
    python autograder/release.py lab1_counting_macs
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
CONFIG = HERE / "nbgrader_config.py"


def load_config(config_file: Path = CONFIG):
    """The traitlets ``Config`` of an nbgrader config file (paths in it resolve against its folder)."""
    from traitlets.config.loader import PyFileConfigLoader

    return PyFileConfigLoader(config_file.name, path=str(config_file.parent)).load_config()


def _venv_on_path() -> None:
    """nbgrader runs the ``alembic`` command when it creates a gradebook: make this interpreter's
    scripts folder (the venv's bin/) findable even when the venv is not activated (``make`` does not)."""
    bin_dir = str(Path(sys.executable).parent)
    if bin_dir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")


def make_api(config_file: Path = CONFIG):
    """An ``NbGraderAPI`` bound to the course whose config file is ``config_file``."""
    from nbgrader.apps import NbGraderAPI
    from nbgrader.coursedir import CourseDirectory

    _venv_on_path()
    config = load_config(config_file)
    coursedir = CourseDirectory(config=config)
    return NbGraderAPI(coursedir=coursedir, config=config)


def find_labs(source_dir: Path) -> list[str]:
    """Lab names: folders ``<source_dir>/<lab>`` that contain ``<lab>.ipynb``."""
    return sorted(p.parent.name for p in source_dir.glob("*/*.ipynb") if p.stem == p.parent.name)


def _normalise(path: Path) -> None:
    """Make the release byte-stable (sorted keys, one trailing newline: nbformat's own layout) and drop the
    instructor-only cell metadata: ``nas_lab.delegate``, the delegating answer the tests grade (it would name
    the library function that answers the question)."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
        cell.metadata.pop("execution", None)
        extra = cell.metadata.get("nas_lab")
        if extra is not None:
            extra.pop("delegate", None)
            if not extra:
                del cell.metadata["nas_lab"]
    nbformat.write(nb, path)


def generate(config_file: Path = CONFIG, labs: list[str] | None = None, quiet: bool = False) -> list[Path]:
    """Generate the released notebook of each lab (all labs by default); returns the written notebooks."""
    api = make_api(config_file)
    source = Path(api.coursedir.source_directory)
    release = Path(api.coursedir.release_directory)
    names = find_labs(source) if labs is None else labs
    if not names:
        raise SystemExit(f"no labs found under {source} (expected <lab>/<lab>.ipynb)")
    written = []
    for lab in names:
        if not (source / lab / f"{lab}.ipynb").exists():
            raise SystemExit(f"{source / lab / (lab + '.ipynb')} does not exist")
        result = api.generate_assignment(lab, force=True, create=True)
        if not result["success"]:
            log, error = result.get("log", ""), result.get("error", "")
            raise SystemExit(f"nbgrader generate_assignment {lab} failed:\n{log}\n{error}")
        out = release / lab / f"{lab}.ipynb"
        _normalise(out)
        written.append(out)
        if not quiet:
            print(f"released {out.relative_to(release.parent)}")
    stale = sorted({p.name for p in release.glob("*") if p.is_dir()} - set(find_labs(source)))
    if stale and not quiet:
        print(f"note: {', '.join(stale)} in {release.name}/ have no source in {source.name}/ (left alone)")
    return written


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("labs", nargs="*", help="lab folder names (default: every lab in solutions/)")
    p.add_argument("--config", type=Path, default=CONFIG, help="nbgrader config file of the course")
    args = p.parse_args(argv)
    written = generate(args.config, args.labs or None)
    print(json.dumps({"released": len(written)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
