"""`prefstream llms register FILE.yaml`: publish a catalog of LLMs (with their upstreams) as LLMRegistered events.

    llms:
      - id: small
        description: "A small, fast and cheap model for simple questions."
        price_in: 0.1          # USD per million input tokens
        price_out: 0.2         # USD per million output tokens
        upstream:              # optional: how `prefstream gateway` reaches it (OpenAI-compatible)
          base_url: https://api.example.com/v1
          model: small-2026-01
          api_key_env: EXAMPLE_API_KEY   # the key's environment variable; the key never goes on the wire

The whole file is checked first (every error as ``FILE: llms[i].field: reason``); nothing is published unless
all of it is valid. A top-level list instead of ``llms:`` works too.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from prefstream.errors import CliError
from prefstream.events import LLMRegistered
from prefstream.options import add_stack_options, settings_from


def read_catalog_file(path: Path) -> list[LLMRegistered]:
    """The file's LLMs as events, or CliError (code 2) listing every problem."""
    import yaml
    from pydantic import ValidationError

    try:
        doc = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise CliError(f"{path}: no such file", 2) from None
    except yaml.YAMLError as exc:
        raise CliError(f"{path}: not valid YAML: {exc}".replace("\n", " "), 2) from None
    items = doc.get("llms") if isinstance(doc, dict) else doc
    if not isinstance(items, list) or not items:
        raise CliError(f"{path}: expected a list of LLMs under `llms:`", 2)
    events, problems = [], []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            problems.append(f"llms[{i}]: expected a mapping, got {type(item).__name__}")
            continue
        fields = {("llm_id" if k == "id" else k): v for k, v in item.items()}
        for key in ("price_in", "price_out"):
            if isinstance(fields.get(key), int) and not isinstance(fields.get(key), bool):
                fields[key] = float(fields[key])
        try:
            events.append(LLMRegistered.model_validate(fields))
        except ValidationError as exc:
            problems += [f"llms[{i}].{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                         for e in exc.errors(include_url=False)]
    if problems:
        raise CliError(f"{path}: " + "; ".join(problems[:10]) + (" ..." if len(problems) > 10 else ""), 2)
    ids = [e.llm_id for e in events]
    if len(set(ids)) != len(ids):
        raise CliError(f"{path}: an LLM id appears twice", 2)
    return events


def cmd_register(args: argparse.Namespace) -> int:
    from streams.client import PrefstreamClient

    events = read_catalog_file(args.file)
    with PrefstreamClient(settings_from(args)) as ps:
        for e in events:
            ps.publish(e, wait=True)
    with_upstream = sum(e.upstream is not None for e in events)
    print(f"registered {len(events)} LLMs ({with_upstream} with an upstream): {', '.join(e.llm_id for e in events)}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("llms", help="manage the LLM catalog (`llms register FILE.yaml`)",
                       description="The candidate LLMs and, for the gateway, their OpenAI-compatible upstreams.")
    llms = p.add_subparsers(dest="llms_command", metavar="ACTION", required=True)
    r = llms.add_parser("register", help="publish the LLMs of a YAML file (with upstreams) to the catalog topic",
                        description=__doc__.split("\n\n")[1] if __doc__ else None,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    add_stack_options(r)
    r.add_argument("file", type=Path, help="YAML file: a list of LLMs under `llms:`")
    r.set_defaults(func=cmd_register)
