"""What one student's kernel costs per lab: peak memory and CPU seconds of running each solution notebook.

    .venv/bin/python benchmarks/bench_lab_resources.py [LAB ...] [--threads N]

Sizes a JupyterHub (docs/hosting.md): each solution notebook is run top to bottom with nbclient from a
temporary folder, as a student would with Run All, and a last cell appended to it reports the kernel's own
``getrusage`` (peak resident memory, user + system CPU seconds, its children included). The client's own
process is not counted: on a hub it is the browser. Prints one Markdown row per lab.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
RUSAGE_CELL = """\
import json as _json, resource as _resource
_s, _c = _resource.getrusage(_resource.RUSAGE_SELF), _resource.getrusage(_resource.RUSAGE_CHILDREN)
print("RUSAGE" + _json.dumps({"peak_mb": max(_s.ru_maxrss, _c.ru_maxrss) / 1024,
                              "cpu_s": _s.ru_utime + _s.ru_stime + _c.ru_utime + _c.ru_stime}))
"""


def measure(lab: str, threads: int | None = None) -> dict[str, float]:
    """Run ``solutions/<lab>/<lab>.ipynb`` in a fresh kernel; its peak memory (MB), CPU and wall seconds."""
    nb = nbformat.read(ROOT / "solutions" / lab / f"{lab}.ipynb", as_version=4)
    if threads:
        nb.cells.insert(0, nbformat.v4.new_code_cell(f"import torch; torch.set_num_threads({threads})"))
    nb.cells.append(nbformat.v4.new_code_cell(RUSAGE_CELL))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / lab
        shutil.copytree(ROOT / "solutions" / lab, work)
        start = time.monotonic()
        NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(work)}}).execute()
        wall = time.monotonic() - start
    text = "".join(o.get("text", "") for o in nb.cells[-1].outputs if o.output_type == "stream")
    usage = json.loads(text.split("RUSAGE", 1)[1])
    return {"peak_mb": usage["peak_mb"], "cpu_s": usage["cpu_s"], "wall_s": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("labs", nargs="*", help="lab names (default: every solutions/<lab>/)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads in the kernel (default: torch's)")
    args = parser.parse_args()
    labs = args.labs or sorted(p.name for p in (ROOT / "solutions").iterdir() if (p / f"{p.name}.ipynb").exists())
    print("| lab | kernel peak memory | CPU seconds | wall seconds |\n| --- | --- | --- | --- |")
    for lab in labs:
        r = measure(lab, args.threads)
        print(f"| {lab} | {r['peak_mb']:.0f} MB | {r['cpu_s']:.0f} | {r['wall_s']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
