"""What every ``nas-lab`` subcommand shares: the registry, the ``@command`` decorator, errors, JSON output."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Handler = Callable[[argparse.Namespace], int]
Configure = Callable[[argparse.ArgumentParser], None]


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    configure: Configure
    handler: Handler


COMMANDS: dict[str, Command] = {}


def command(name: str, help: str, configure: Configure | None = None) -> Callable[[Handler], Handler]:
    """Decorator: register ``handler(args) -> exit code`` as subcommand ``name``; ``configure(parser)`` adds
    its options."""
    def register(fn: Handler) -> Handler:
        if name in COMMANDS:
            raise RuntimeError(f"nas-lab command {name!r} is registered twice")
        COMMANDS[name] = Command(name, help, configure or (lambda p: None), fn)
        return fn
    return register


def fail(message: str, code: int = 2) -> int:
    """Print ``error: message`` on stderr and return ``code`` (2: bad input, 1: a missing or broken file)."""
    print(f"error: {message}", file=sys.stderr)
    return code


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def emit(result: dict[str, Any], as_json: bool, text: Callable[[dict[str, Any]], str]) -> int:
    """Print ``result`` as one JSON object (``--json``) or as ``text(result)``; returns exit code 0."""
    print(json.dumps(result) if as_json else text(result))
    return 0


def add_json_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON object")


def add_artifact_flags(p: argparse.ArgumentParser, what: str) -> None:
    """--out, --no-record and --json for a command that writes a shipped artifact (``what``)."""
    p.add_argument("--out", type=Path, default=None, help=f"{what} (default: the shipped path in data/)")
    p.add_argument("--no-record", action="store_true", help="do not update data/manifest.json")
    add_json_flag(p)


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``"I/K"`` -> ``(I, K)``; ``None`` -> ``None``; anything else raises ``ValueError`` with a usage hint."""
    if text is None:
        return None
    parts = text.split("/")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise ValueError(f"--shard {text!r}: expected I/K, e.g. 0/2")
    index, count = int(parts[0]), int(parts[1])
    if not 0 <= index < count:
        raise ValueError(f"--shard {text!r}: the index must be in 0..{count - 1}")
    return index, count


def add_shard_flag(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--shard", default=None, metavar="I/K",
                   help=f"{what} every K-th planned subnet from I into a shard file (one process per core); "
                        "a later run without --shard merges the shards")
