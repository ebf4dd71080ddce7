"""`prefstream`: the user-facing command line. Each component registers its own subcommands."""

from __future__ import annotations

import argparse
import importlib
import sys

#: Modules with a ``register(subparsers)`` function, in the order their commands appear in --help.
COMMAND_MODULES = [
    "stack.commands",
    "stack.demo",
    "streams.cli",
    "streams.catalog_file",
    "gateway.cli",
    "workers.cli",
    "graphstore.cli",
    "graphstore.counts_cli",
    "trainer.cli",
    "trainer.refresh_cli",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="prefstream",
        description="Streaming, personalized LLM router: chat events in Kafka, a user graph, HGT scoring on Ray.",
        epilog="Settings come from PREFSTREAM_* environment variables; see README.md. Exit codes: 0 ok, "
               "1 runtime failure, 2 usage or configuration error.",
    )
    parser.add_argument("--debug", action="store_true", help="show the traceback of a failure")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from prefstream.errors import CliError, one_line

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except CliError as exc:
        if args.debug:
            raise
        print(f"prefstream: {exc}", file=sys.stderr)
        return exc.code
    except Exception as exc:  # a connection failure deep in a client library: one line, unless --debug
        line = None if args.debug else one_line(exc, _settings(args))
        if line is None:
            raise
        print(f"prefstream: {line}", file=sys.stderr)
        return 1


def _settings(args):
    try:
        from prefstream.options import settings_from

        return settings_from(args)
    except Exception:
        return None


if __name__ == "__main__":
    sys.exit(main())
