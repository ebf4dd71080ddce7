"""How much does one refresh of the periodic trainer give back on an LLM that training never saw?

    python bench/quality.py            # the default benchmark and the model trained with every LLM
    python bench/new_llm_refresh.py    # -> bench/results/new_llm_refresh.{json,md}

This continues bench/new_llm.py. The held-out LLM X was registered when each user's test period began, so
training never saw it. At the median timestamp of the test period, the periodic trainer refreshes. Like
trainer/refresh.py it starts from the serving model, here the defaults trained without X. It trains
``RefreshConfig.steps`` steps on everything rated so far, X's first feedback included, and validates on a fifth
of those samples.

Every method is scored on the test pairs after that time, on the same histories:
- serving: the model trained without X, before the refresh;
- refreshed: the same model after the refresh, as a cycle refreshes it (X's comparisons oversampled, see below);
- trained with X: bench/quality.py's model, which saw X's training answers;
- the per-user win count.

It then asks how early a refresh can be. At the times X has played ``--early-games`` pairwise games, and at the
median, it refreshes twice on what was rated by then: plainly (batches drawn uniformly), and as a cycle does,
oversampling the comparisons of the LLMs that the serving model trained on fewer than ``RefreshConfig.new_llm_games``
games of (trainer.refresh.unlearned and boosted). All are scored on the same later pairs. The periodic trainer
runs a cycle once a new LLM reaches ``PREFSTREAM_TRAINER_NEW_LLM_GAMES`` games (trainer/refresh_cli.py).

The files with X's test-period answers before the refresh time moved into the training split are written
next to bench/new_llm.py's. The script runs on two threads; run it alone.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import RESULTS, command_line, machine_facts, model_path  # noqa: E402
from bench.new_llm import DATA, compare, filtered_copy, fit_on, load, pair_table, pts, scored  # noqa: E402
from trainer.config import TrainConfig  # noqa: E402
from trainer.refresh import RefreshConfig, boosted, refit, unlearned  # noqa: E402

METHODS = ("serving", "refreshed", "with_x", "count")


def refresh_layout(filtered: Path, out: Path, cut: int | None = None) -> tuple[Path, int]:
    """``out``: ``filtered``'s train split plus its test answers from before ``cut`` (epoch ms; the test period's
    median timestamp when None): those are what a refresh at that time trains on. Its valid split, and the later
    test answers as the test split. Returns (``out``, ``cut``)."""
    out.mkdir(parents=True, exist_ok=True)
    test = (filtered / "test.jsonl").read_text().splitlines()
    stamps = [json.loads(line)["tstamp"] for line in test]
    cut = int(np.median(stamps)) if cut is None else int(cut)
    early = [line for line, ts in zip(test, stamps) if ts < cut]
    late = [line for line, ts in zip(test, stamps) if ts >= cut]
    train = (filtered / "train.jsonl").read_text().splitlines() + early
    for name, lines in (("train", train), ("test", late)):
        (out / f"{name}.jsonl").write_text("".join(line + "\n" for line in lines))
    for name in ("valid.jsonl", "llm_catalog.json"):
        (out / name).write_bytes((filtered / name).read_bytes())
    return out, cut


def games_by_time(test: Path, llm: str) -> tuple[np.ndarray, np.ndarray]:
    """(times, games): ``llm``'s pairwise games in ``test``'s answers (GMTRouter JSONL) counted as the trainer's
    recount counts them (graphstore.counts: each rated comparison of K answers gives each of them K - 1 games),
    cumulated over the comparisons in time order. ``games[i]`` is the count once the comparison at ``times[i]``
    is rated; a refresh at ``times[i] + 1`` trains on all of them (refresh_layout)."""
    from graphstore.counts import comparisons, win_counts

    rows: dict[tuple, list] = {}
    for line in test.read_text().splitlines():
        d = json.loads(line)
        key = (d["judge"], d["question_id"], d["turn"])
        rows.setdefault(key, []).append((d["tstamp"], d["model"], d["conversation"][-1]["rating"]))
    order = sorted(rows, key=lambda k: max(ts for ts, _, _ in rows[k]))
    times = np.array([max(ts for ts, _, _ in rows[k]) for k in order], np.int64)
    per = [win_counts(comparisons([(0, m, r) for _, m, r in rows[k]]))[1].get(llm, 0.0) for k in order]
    return times, np.cumsum(per)


def time_of_games(times: np.ndarray, games: np.ndarray, n: float) -> int | None:
    """The refresh time (epoch ms) just after ``llm`` reached ``n`` games (games_by_time), or None if never."""
    i = int(np.searchsorted(games, n))
    return int(times[i]) + 1 if i < len(times) else None


def refreshed_model(serving, train: list, llms, steps: int, boost=()):
    """``serving`` refitted ``steps`` steps on ``train`` by the refresh cycle's own step (trainer.refresh.refit),
    oversampling the comparisons of the LLMs in ``boost`` as a cycle does, and the seconds it took."""
    t0 = time.perf_counter()
    res = refit(train, steps, serving=serving, llms=llms, progress=True, boost=boost,
                share=RefreshConfig().new_llm_share)
    return res.model, time.perf_counter() - t0


def refresh_points(filtered: Path, llm: str, ns: list[float], cut: int) -> list[tuple[float, int]]:
    """(games, time): the refresh times once ``llm`` has played each n in ``ns`` games, those before ``cut``, then
    ``cut`` itself with the games played by then."""
    times, games = games_by_time(filtered / "test.jsonl", llm)
    out = [(n, at) for n in ns if (at := time_of_games(times, games, n)) is not None and at < cut]
    return out + [(float(games[np.searchsorted(times, cut) - 1]) if times[0] < cut else 0.0, cut)]


def refreshes(serving, seen: dict, ds, tables: dict, filtered: Path, args, points: list) -> list[dict]:
    """At each point of refresh_points, refresh ``serving`` twice on what was rated by then: plainly, and as a
    cycle does, oversampling the LLMs it trained on fewer than ``RefreshConfig.new_llm_games`` games of (``seen``,
    trainer.refresh.unlearned). Both are scored on ``ds``'s test pairs, those after the last point, which every
    other method is scored on. The last point's cycle refresh goes into ``tables`` as "refreshed"."""
    from trainer.count_scorer import CountScorer
    from trainer.data import config_samples

    out = []
    inv = tables["count"]["involves"]
    for n, at in points:
        at_end = at == points[-1][1]
        dsn = ds if at_end else load(refresh_layout(filtered, args.work / f"{args.llm}-refresh-{int(n)}", at)[0])
        train = config_samples(dsn, TrainConfig(model=serving.cfg))
        boost = unlearned(CountScorer.counted(train).games, seen, RefreshConfig().new_llm_games)
        row: dict = {"games": n, "at_ms": at, "boosted": boost, "samples": len(train),
                     "added": len(boosted(train, boost, RefreshConfig().new_llm_share)) - len(train), "refresh_s": {}}
        for name, b in (("plain", ()), ("cycle", boost)):
            model, row["refresh_s"][name] = refreshed_model(serving, train, dsn.llms, args.steps, b)
            table = pair_table(*scored(model, ds), args.llm)
            if at_end and name == "cycle":
                tables["refreshed"] = table
            row[name] = {part: {"accuracy": float(table["correct"][mask].mean()),
                                "vs": {f"refreshed - {m}": compare(table, tables[m], mask)
                                       for m in ("serving", "count")}}
                         for part, mask in (("with_x", inv), ("without_x", ~inv))}
            if name == "cycle":
                row["cycle"]["with_x"]["vs"]["cycle - plain"] = compare(table, plain, inv)
            plain = table
        out.append(row)
    return out


def markdown(res: dict) -> str:
    md = ["# An LLM that training never saw, after one refresh", "",
          f"Command: `{res['command']}`. Default benchmark. The held-out LLM is in neither the train nor the valid "
          f"file, and the refresh ran at the test period's median timestamp ({res['refresh_at_ms']} ms). Test pairs "
          "after that time; in brackets, points with a 95 % interval from resampling whole users. Load average "
          f"{res['machine']['loadavg_1_5_15'][0]:.2f} at the start, {res['loadavg_end'][0]:.2f} at the end.", "",
          "| pairs | serving (trained without it) | refreshed | trained with it | per-user count | refreshed - serving "
          "| refreshed - count | refreshed - with |", "|---|---|---|---|---|---|---|---|"]
    for part, label in (("with_x", f"involving {res['llm']}"), ("without_x", "the rest")):
        a, vs = res[part], res[part]["vs"]
        md.append(f"| {label} ({res['pairs_' + part]}) | {a['serving']:.4f} | {a['refreshed']:.4f} | {a['with_x']:.4f} "
                  f"| {a['count']:.4f} | {pts(vs['refreshed - serving'])} | {pts(vs['refreshed - count'])} | "
                  f"{pts(vs['refreshed - with_x'])} |")
    md += ["", f"Training seconds (two threads): the serving model ({res['serving_steps']} steps) "
           f"{res['train_s']['serving']:.0f}, the refresh ({res['refresh_steps']} steps at peak learning rate "
           f"{res.get('warm_lr', 2e-3):g}, trainer.refresh.refit_config) {res['train_s']['refresh']:.0f}.", ""]
    md += [f"## Refreshing once {res['llm']} has played n pairwise games", "",
           "The same later pairs, with the same histories. Games are counted as the trainer's recount counts them. "
           "A plain refresh draws its batches uniformly; a cycle's refresh (trainer.refresh.refit, as run_cycle "
           f"calls it) oversamples the comparisons of the LLMs its serving model trained on fewer than "
           f"{res['new_llm_games']} games of, to {100 * res['new_llm_share']:.0f} % of the samples "
           "(trainer.refresh.boosted). The last row is the refresh above.", "",
           "| n games | samples (+ repeats) | involving it: plain | cycle | cycle - plain | cycle - serving "
           "| cycle - count | the rest: plain | cycle | cycle - serving |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in res["early"]:
        p, c = r["plain"], r["cycle"]
        md.append(f"| {r['games']:.0f} | {r['samples']} (+{r['added']}) | {p['with_x']['accuracy']:.4f} | "
                  f"{c['with_x']['accuracy']:.4f} | "
                  f"{pts(c['with_x']['vs']['cycle - plain'])} | {pts(c['with_x']['vs']['refreshed - serving'])} | "
                  f"{pts(c['with_x']['vs']['refreshed - count'])} | {p['without_x']['accuracy']:.4f} | "
                  f"{c['without_x']['accuracy']:.4f} | {pts(c['without_x']['vs']['refreshed - serving'])} |")
    md.append("")
    return "\n".join(md)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--llm", default="llama3-chatqa-1.5-70b", help="the held-out LLM of the default benchmark")
    ap.add_argument("--steps", type=int, default=RefreshConfig().steps, help="steps of the refresh")
    ap.add_argument("--serving-steps", type=int, default=TrainConfig().steps,
                    help="training steps of the serving model (fewer: a quick check)")
    ap.add_argument("--early-games", default="50,200,800",
                    help="also refresh earlier, once the held-out LLM has played this many pairwise games (comma "
                         "list; '' for none), and score those refreshes on the same later pairs")
    ap.add_argument("--work", type=Path, default=ROOT / "var" / "bench" / "new_llm", help="filtered copies go here")
    ap.add_argument("--out", type=Path, default=RESULTS / "new_llm_refresh.json")
    args = ap.parse_args()
    if not model_path(DATA, TrainConfig()).exists():
        ap.error(f"no trained model in {DATA}: run python bench/quality.py first")
    import torch

    from trainer.baselines import PerUserMajority
    from trainer.checkpoint import load_checkpoint
    from trainer.count_scorer import CountScorer
    from trainer.data import config_samples, online_samples

    torch.set_num_threads(2)
    facts = machine_facts()
    filtered = filtered_copy(DATA, args.work / args.llm, args.llm)
    layout, cut = refresh_layout(filtered, args.work / f"{args.llm}-refresh")
    fds = load(filtered)
    fitted, serving_s = fit_on(fds, TrainConfig(steps=args.serving_steps), progress=True)
    serving = fitted.model
    seen = CountScorer.counted(config_samples(fds, TrainConfig())).games  # what the serving model trained on
    del fds
    ds = load(layout)
    groups, scores = scored(serving, ds)
    count = PerUserMajority().fit(ds).score(online_samples(ds, "test", history=10**9, embed=False))
    tables = {"serving": pair_table(groups, scores, args.llm),
              "with_x": pair_table(*scored(load_checkpoint(model_path(DATA, TrainConfig())).model, ds), args.llm),
              "count": pair_table(groups, count, args.llm)}
    points = refresh_points(filtered, args.llm, [float(n) for n in args.early_games.split(",") if n.strip()], cut)
    early = refreshes(serving, seen, ds, tables, filtered, args, points)
    inv = tables["count"]["involves"]
    res: dict = {"command": command_line(), "machine": facts, "llm": args.llm, "refresh_at_ms": cut,
                 "refresh_steps": args.steps, "serving_steps": args.serving_steps, "pairs_with_x": int(inv.sum()),
                 "pairs_without_x": int((~inv).sum()), "new_llm_games": RefreshConfig().new_llm_games,
                 "new_llm_share": RefreshConfig().new_llm_share, "warm_lr": RefreshConfig().warm_lr,
                 "games_at_refresh": points[-1][0],
                 "train_s": {"serving": serving_s, "refresh": early[-1]["refresh_s"]["cycle"]}, "early": early}
    for part, mask in (("with_x", inv), ("without_x", ~inv)):
        res[part] = {m: float(tables[m]["correct"][mask].mean()) for m in METHODS}
        res[part]["vs"] = {f"refreshed - {m}": compare(tables["refreshed"], tables[m], mask)
                           for m in ("serving", "count", "with_x")}
    res["loadavg_end"] = list(os.getloadavg())
    args.out.write_text(json.dumps(res, indent=2, default=float) + "\n")
    args.out.with_suffix(".md").write_text(markdown(res))
    print(markdown(res), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
