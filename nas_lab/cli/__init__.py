"""The ``nas-lab`` command line: thin subcommands over the library (no logic of its own).

One module per group of commands: :mod:`.info`, :mod:`.supernet` (train, export, evaluate), :mod:`.datasets`
(accuracy data set, scratch benchmark), :mod:`.predictor`, :mod:`.latency`, :mod:`.search`, :mod:`.grade`.
A new command goes into the module of its group, decorated with :func:`~nas_lab.cli.base.command`.
"""

from __future__ import annotations

import argparse

from nas_lab.cli import datasets, grade, info, latency, predictor, proxy, search, supernet  # noqa: F401  (registers)
from nas_lab.cli.base import COMMANDS, command

__all__ = ["build_parser", "command", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nas-lab", description="Neural Architecture Search course lab tools.",
                                     allow_abbrev=False)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, cmd in sorted(COMMANDS.items()):
        # no abbreviations: a half-typed or misspelt option is an error, never silently another option
        cmd.configure(sub.add_parser(name, help=cmd.help, description=cmd.help, allow_abbrev=False))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return COMMANDS[args.command].handler(args)
