"""The evaluation report as markdown tables, PNG plots and JSON (shape: bench/results/quality.json)."""

from __future__ import annotations

import json
from pathlib import Path

from trainer.data import LINE_ORDER_MIXED
from trainer.evaluate import DIAGNOSTICS


def _row(name: str, m: dict) -> str:
    return (f"| {name} | {m['accuracy']:.4f} | {m['auc']:.4f} | {m.get('user_auc', float('nan')):.4f} | "
            f"{m.get('top1', float('nan')):.4f} |")


_CROWD_LINE = {"earlier": " The crowd term of a test pair reads every other user's ratings from before it.",
               "train": " The crowd term of a test pair reads other users' ratings in the training split only."}


_TIME_LINE = {"line order": " The files have no time stamps: each file's line order stands for time.",
              LINE_ORDER_MIXED: " Some lines had time stamps and some did not: each file's line order stands for "
                                "time instead."}


def table(report: dict) -> str:
    """Markdown: every method on the test pairs, the ablations, per-family accuracy, cold start."""
    lines = [f"History: the last {report.get('history_turns', '?')} turns before each prediction (GMTRouter and its "
             "ablations); the count baselines use the whole past."
             + _CROWD_LINE.get(report.get("held_out_crowd"), "")
             + _TIME_LINE.get(report.get("data", {}).get("time", "file"), ""), "",
             "| method | accuracy | AUC | per-user AUC | top-1 (K>2) |", "|---|---|---|---|---|",
             _row("**gmtrouter**", report["gmtrouter"])]
    lines += [_row(n, m) for n, m in sorted(report["baselines"].items(), key=lambda kv: -(kv[1].get("accuracy") or 0))]
    if report.get("ablations"):
        full = report["gmtrouter"]
        lines += ["", "Ablations (each trained from scratch like the full model):", "",
                  "| variant | accuracy | AUC | accuracy vs full |", "|---|---|---|---|",
                  f"| full | {full['accuracy']:.4f} | {full['auc']:.4f} | |"]
        lines += [f"| {n} | {m['accuracy']:.4f} | {m['auc']:.4f} | {m['accuracy'] - full['accuracy']:+.4f} |"
                  for n, m in report["ablations"].items()]
        if set(DIAGNOSTICS) & set(report["ablations"]):
            lines += ["", "hgt_sees_ratings*: diagnostics, not served. The HGT also reads the ratings (response "
                      "nodes), as the paper's model does, which loses the guarantee that \"A beat B\" never lowers A "
                      "over B; compare hgt_sees_ratings with full and hgt_sees_ratings_only with hgt_only."]
    fams = report.get("families")
    if fams:
        names = [k for k in next(iter(fams.values())) if k != "test_groups"]
        lines += ["", "Per family (accuracy):", "", "| family | test groups | " + " | ".join(names) + " |",
                  "|---|---|" + "---|" * len(names)]
        lines += [f"| {f} | {v['test_groups']} | " + " | ".join(f"{v[n]:.4f}" for n in names) + " |"
                  for f, v in fams.items()]
    if report.get("cold_start"):
        lines += ["", "Cold start (unseen users, k visible groups; same targets for every k):", "",
                  "| k | gmtrouter | hierarchical logistic | per-user majority | global best |", "|---|---|---|---|---|"]
        for k, e in report["cold_start"].items():
            lines.append(f"| {k} | {e['gmtrouter']['accuracy']:.4f} | {e['hierarchical_logistic']['accuracy']:.4f} | "
                         f"{e['per_user_majority']['accuracy']:.4f} | {e['global_best']['accuracy']:.4f} |")
    return "\n".join(lines)


def plot(report: dict, out_prefix: Path | str) -> list[Path]:
    """Cold-start curve and cost/quality curve as PNG; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_prefix = Path(out_prefix)
    out_prefix.parent.mkdir(parents=True, exist_ok=True)
    files = []
    if report.get("cold_start"):
        ks = [int(k) for k in report["cold_start"]]
        fig, ax = plt.subplots(figsize=(5, 3.5))
        for name in ("gmtrouter", "hierarchical_logistic", "per_user_majority", "global_best"):
            ax.plot(ks, [report["cold_start"][str(k)][name]["accuracy"] for k in ks], marker="o", label=name)
        ax.set_xlabel("visible groups of a new user (k)")
        ax.set_ylabel("pairwise accuracy")
        ax.set_title("Cold start")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        files.append(_save(fig, out_prefix, "_cold_start.png"))
    cq = report.get("cost_quality")
    if cq:
        fig, ax = plt.subplots(figsize=(5, 3.5))
        ax.plot([c["cost"] for c in cq["gmtrouter"]], [c["quality"] for c in cq["gmtrouter"]], marker="o",
                label="gmtrouter (score - λ·price)")
        for name, r in cq["reference"].items():
            ax.scatter([r["cost"]], [r["quality"]], label=name, marker="x")
        ax.set_xlabel("mean output price of the pick (USD / M tokens)")
        ax.set_ylabel("mean rating of the pick")
        ax.set_title("Cost / quality on test groups")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        files.append(_save(fig, out_prefix, "_cost_quality.png"))
    return files


def _save(fig, out_prefix: Path, suffix: str) -> Path:
    import matplotlib.pyplot as plt

    p = out_prefix.with_name(out_prefix.name + suffix)
    fig.savefig(p, dpi=120)
    plt.close(fig)
    return p


def write_report(report: dict, json_path: Path | str) -> None:
    json_path = Path(json_path)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(report, indent=1, default=float))
