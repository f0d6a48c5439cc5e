"""The ``nas-lab`` command line: thin subcommands over the library (no logic of its own)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

import nas_lab

Handler = Callable[[argparse.Namespace], int]
_COMMANDS: dict[str, tuple[Callable[[argparse.ArgumentParser], None], Handler, str]] = {}


def command(name: str, help: str, configure: Callable[[argparse.ArgumentParser], None] | None = None):
    """Register a subcommand: decorate ``handler(args) -> exit code``; ``configure(parser)`` adds its options."""
    def wrap(fn: Handler) -> Handler:
        _COMMANDS[name] = (configure or (lambda p: None), fn, help)
        return fn
    return wrap


def _info_configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON object")


def _info(args: argparse.Namespace) -> int:
    from nas_lab.artifacts import verify_all
    from nas_lab.space import SearchSpace

    space = SearchSpace()
    info = {"version": nas_lab.__version__, "space": space.describe(), "artifacts": verify_all()}
    from nas_lab.artifacts import load_manifest
    info["checksums"] = {name: e["sha256"] for name, e in load_manifest().items()}
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print(f"nas-lab {info['version']}")
        print(f"search space: {space.size():,} subnets ({space.size(False, False):.3g} kernel/expand/depth)")
        for name, status in info["artifacts"].items():
            print(f"  data/{name}: {status}")
    return 0 if all(v == "ok" for v in info["artifacts"].values()) else 1


command("info", "versions, search space and shipped artifacts (checksums verified)",
        configure=_info_configure)(_info)


def build_parser() -> argparse.ArgumentParser:
    _load_plugins()
    parser = argparse.ArgumentParser(prog="nas-lab", description="Neural Architecture Search course lab tools.",
                                     allow_abbrev=False)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (configure, _, help_text) in sorted(_COMMANDS.items()):
        # no abbreviations: a half-typed or misspelt option is an error, never silently another option
        configure(sub.add_parser(name, help=help_text, description=help_text, allow_abbrev=False))
    return parser


def _load_plugins() -> None:
    """Import the modules that register further subcommands (each one registers its own)."""
    import importlib

    for module in ("nas_lab.cli_supernet", "nas_lab.cli_search", "nas_lab.cli_grade"):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as err:
            if err.name != module:
                raise


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return _COMMANDS[args.command][1](args)


if __name__ == "__main__":
    # run the registry of the importable module: plugins register into ``nas_lab.cli``, not ``__main__``
    from nas_lab.cli import main as _main

    sys.exit(_main())
