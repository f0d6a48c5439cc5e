"""``nas-lab measure-latency``: the per-layer latency table of this machine."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from nas_lab.cli.base import add_artifact_flags, command, fail


def _configure(p: argparse.ArgumentParser) -> None:
    add_artifact_flags(p, "JSON file")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--min-run-time", type=float, default=0.05, help="seconds of timing per layer")
    p.add_argument("--passes", type=int, default=1,
                   help="time everything this many times and keep the fastest (steadier on a shared machine)")
    p.add_argument("--calibrate", type=int, default=20, metavar="N",
                   help="fit scale and per-layer overhead on N random subnets (seed 1; 0: keep the raw sums)")
    p.add_argument("--validate", type=int, default=30, metavar="N",
                   help="compare with the measured latency of N random subnets (0: skip)")
    p.add_argument("--seed", type=int, default=0)


@command("measure-latency", "measure the per-layer latency table of this machine (about a minute)",
         configure=_configure)
def measure_latency(args: argparse.Namespace) -> int:
    from nas_lab import artifacts, latency

    if args.passes < 1:
        return fail(f"--passes must be at least 1, got {args.passes}")
    table = latency.measure_table(threads=args.threads, min_run_time=args.min_run_time, progress=not args.json,
                                  passes=args.passes)
    if args.calibrate:
        table = latency.calibrate(table, args.calibrate, progress=not args.json)
    if args.validate:
        v = latency.validate(table, args.validate, args.seed, progress=not args.json)
        table.meta["validation"] = {k: v[k] for k in ("n", "within_10pct", "mape_pct", "pearson_r", "seed", "passes",
                                                       "rows")}
    out = args.out or artifacts.data_dir() / latency.TABLE_NAME
    table.save(out)
    if not args.no_record and Path(out).resolve().parent == artifacts.data_dir().resolve():
        artifacts.record(Path(out).name, artifacts.LATENCY_REBUILD,
                         f"per-layer latency table ({len(table.entries)} layers, {args.threads} thread(s)) "
                         f"measured on {table.meta['machine']}")
    summary = {"out": str(out), "layers": len(table.entries), **{k: table.meta[k] for k in ("machine", "threads")},
               "validation": table.meta.get("validation")}
    if args.json:
        print(json.dumps(summary))
        return 0
    print(f"{summary['layers']} layers measured ({args.threads} thread(s)) -> {out}")
    if summary["validation"]:
        v = summary["validation"]
        print(f"validation on {v['n']} subnets: {v['within_10pct']:.0%} within +-10%, MAPE {v['mape_pct']:.1f} %, "
              f"Pearson r {v['pearson_r']:.3f}")
    return 0
