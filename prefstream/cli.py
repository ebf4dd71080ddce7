"""`prefstream`: the user-facing command line. Each component registers its own subcommands."""

from __future__ import annotations

import argparse
import importlib
import sys

#: Modules with a ``register(subparsers)`` function, in the order their commands appear in --help.
COMMAND_MODULES = [
    "prefstream.stack_cli",
    "prefstream.demo",
    "streams.cli",
    "workers.cli",
    "graphstore.cli",
    "trainer.cli",
    "trainer.refresh_cli",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="prefstream",
        description="Streaming, personalized LLM router: chat events in Kafka, a user graph, HGT scoring on Ray.",
        epilog="Settings come from PREFSTREAM_* environment variables; see README.md.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
