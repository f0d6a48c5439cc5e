"""``nas-lab info``: versions, the search space and the shipped artifacts (checksums verified)."""

from __future__ import annotations

import argparse

import nas_lab
from nas_lab.cli.base import add_json_flag, command, emit


@command("info", "versions, search space and shipped artifacts (checksums verified)", configure=add_json_flag)
def info(args: argparse.Namespace) -> int:
    from nas_lab.artifacts import load_manifest, verify_all
    from nas_lab.space import SearchSpace

    space = SearchSpace()
    result = {"version": nas_lab.__version__, "space": space.describe(), "artifacts": verify_all(),
              "checksums": {name: e["sha256"] for name, e in load_manifest().items()}}

    def text(r: dict) -> str:
        lines = [f"nas-lab {r['version']}",
                 f"search space: {space.size():,} subnets ({space.size(False, False):.3g} kernel/expand/depth)"]
        lines += [f"  data/{name}: {status}" for name, status in r["artifacts"].items()]
        return "\n".join(lines)

    emit(result, args.json, text)
    return 0 if all(v == "ok" for v in result["artifacts"].values()) else 1
