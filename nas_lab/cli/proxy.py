"""``nas-lab proxy``: zero-cost proxy scores of one arch, or of a set of archs ranked against a ground truth."""

from __future__ import annotations

import argparse
import random

from nas_lab.cli.base import add_json_flag, command, emit, fail


def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--name", default=None, help="proxy name (see --list)")
    p.add_argument("--list", action="store_true", help="list the registered proxies and exit")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--arch", default=None, help="one arch string (or 'largest' / 'smallest')")
    what.add_argument("--bench", action="store_true",
                      help="every arch of the from-scratch bench (its shards' finished rows until the CSV exists); "
                           "truth: test accuracy")
    what.add_argument("--dataset", action="store_true",
                      help="a seeded sample of the accuracy data set; truth: inherited (supernet) accuracy")
    p.add_argument("--limit", type=int, default=200, help="--dataset: archs in the sample (default 200)")
    p.add_argument("--sample-seed", type=int, default=0, help="--dataset: seed of the sample")
    p.add_argument("--seeds", type=int, default=3, help="initialisations per arch (seeds 0..N-1)")
    p.add_argument("--batch-size", type=int, default=64, help="training images per score")
    p.add_argument("--init", choices=("own", "supernet"), default="own",
                   help="own: init rules at the subnet's own shapes; supernet: a slice of a fresh supernet")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    add_json_flag(p)


def _archs_and_truth(args: argparse.Namespace) -> tuple[list, list[float], str]:
    from nas_lab import artifacts, scratch_bench

    if args.bench:
        bench, source = scratch_bench.ground_truth()
        return bench.archs, bench.test_accuracy.tolist(), f"scratch bench: {source}; truth: test accuracy"
    data = artifacts.load("accuracy_dataset.csv")
    if args.limit < 2:
        raise ValueError(f"--limit {args.limit}: need at least 2 archs to rank")
    idx = sorted(random.Random(args.sample_seed).sample(range(len(data)), min(args.limit, len(data))))
    return ([data.archs[i] for i in idx], [float(data.accuracy[i]) for i in idx],
            f"accuracy data set: {len(idx)} of {len(data)} archs (sample seed {args.sample_seed}); "
            "truth: inherited accuracy")


@command("proxy", "score archs with a zero-cost proxy; for a set of archs, rank correlation with the truth",
         configure=_configure)
def proxy(args: argparse.Namespace) -> int:
    import torch

    from nas_lab import proxies
    from nas_lab.artifacts import ArtifactError
    from nas_lab.space import SearchSpace

    if args.list:
        rows = {name: {"description": p.description, "needs_data": p.needs_data, "needs_labels": p.needs_labels}
                for name, p in proxies.PROXIES.items()}
        return emit({"proxies": rows}, args.json, lambda r: "\n".join(
            f"{n:10s} {'data' if v['needs_data'] else '    '} {'labels' if v['needs_labels'] else '      '} "
            f"{v['description']}" for n, v in r["proxies"].items()))
    if args.name is None:
        return fail("--name is required (nas-lab proxy --list shows the proxies)")
    if not (args.arch or args.bench or args.dataset):
        return fail("choose what to score: --arch ARCH, --bench or --dataset")
    if args.seeds < 1 or args.batch_size < 1:
        return fail("--seeds and --batch-size must be at least 1")
    try:
        proxies.get_proxy(args.name)
        if args.threads:
            torch.set_num_threads(args.threads)
        if args.arch:
            archs, truth, source = [SearchSpace().parse(args.arch)], None, "one arch"
        else:
            archs, truth, source = _archs_and_truth(args)
    except (ArtifactError, FileNotFoundError) as err:
        return fail(str(err), 1)
    except ValueError as err:
        return fail(str(err))
    scores = proxies.score_archs(args.name, archs, seeds=range(args.seeds), batch_size=args.batch_size,
                                 init=args.init)
    result = {"proxy": args.name, "source": source, "init": args.init, "batch_size": args.batch_size,
              **scores.to_dict()}
    if truth is not None:
        result["correlations"] = scores.correlations(truth)
    return emit(result, args.json, _text)


def _text(r: dict) -> str:
    a = r["archs"]
    per = f"{r['seconds_per_arch']:.3f} s per arch per initialisation"
    if "correlations" not in r:
        return (f"{r['proxy']} of {a[0]['arch']}: {a[0]['mean']:.6g} (mean of {len(r['seeds'])} initialisations, "
                f"std {a[0]['std']:.3g}; {per})")
    c = r["correlations"]
    return (f"{r['proxy']} on {c['n']} archs ({r['source']})\n"
            f"  Kendall tau {c['kendall_tau']:+.3f} +- {c['kendall_tau_std']:.3f}   Spearman {c['spearman']:+.3f} "
            f"+- {c['spearman_std']:.3f}   (mean +- std over {len(r['seeds'])} initialisations)\n"
            f"  seed-averaged score: Kendall tau {c['kendall_tau_of_mean']:+.3f}   Spearman "
            f"{c['spearman_of_mean']:+.3f}\n  {per}")
