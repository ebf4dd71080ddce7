"""Shared helpers for the streaming benchmarks (bench/route_latency.py, bench/ingest.py).

A private stack (Tansu broker + FalkorDB on free ports, data in a temp dir), machine facts, per-process
CPU accounting from /proc, a fixed-seed model, and a graph preloaded from the simulator.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from prefstream.config import Settings  # noqa: E402
from prefstream.procs import Proc, free_port, stop  # noqa: E402

RESULTS = ROOT / "bench" / "results"
CLK = os.sysconf("SC_CLK_TCK")
#: the LLM catalog of the families benchmark (trainer/families.py) and of `prefstream eval --catalog` on other data
CATALOG = ROOT.parent / "shared" / "data" / "llmrouter" / "llm_candidates.json"


def catalog_for(kind: str, data: Path) -> Path:
    """The LLM catalog a benchmark's files in ``data`` are read with: the shared :data:`CATALOG` for the families
    generator, the one the default simulator wrote beside its files otherwise."""
    return CATALOG if kind == "families" else data / "llm_catalog.json"


def clean_env() -> None:
    """A benchmark defines its own settings: never let a user's PREFSTREAM_* env point it at a live stack."""
    for k in [k for k in os.environ if k.startswith("PREFSTREAM_")]:
        os.environ.pop(k)


def command_line() -> str:
    return "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]])


def machine_facts() -> dict:
    import torch

    facts = {
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "affinity_cpus": len(os.sched_getaffinity(0)),
        "loadavg_1_5_15": list(os.getloadavg()),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }
    try:
        facts["cpu_model"] = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except Exception:
        pass
    try:
        facts["mem_total_gb"] = round(int(next(l.split()[1] for l in open("/proc/meminfo") if l.startswith("MemTotal"))) / 2**20, 1)
    except Exception:
        pass
    try:
        facts["git_commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                             text=True).stdout.strip()
    except Exception:
        pass
    return facts


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds; 0 if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            f = fh.read().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / CLK
    except (OSError, IndexError, ValueError):
        return 0.0


def rss_kb(pid: int) -> int | None:
    """The resident set of a process in kB (None if it is gone)."""
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


class CpuMeter:
    """Cores used by some processes over a window: (cpu seconds delta) / (wall seconds)."""

    def __init__(self, pids: dict[str, int]):
        self.pids = pids
        self.t0 = time.monotonic()
        self.c0 = {k: cpu_seconds(p) for k, p in pids.items()}

    def cores(self) -> dict[str, float]:
        dt = max(time.monotonic() - self.t0, 1e-9)
        return {k: round((cpu_seconds(p) - self.c0[k]) / dt, 3) for k, p in self.pids.items()}


class PrivateStack:
    """A private broker and FalkorDB server on free ports in a temp dir: `prefstream up` without Ray and apps
    (stack.local.Stack), so a benchmark starts exactly what a user's stack starts. stop() ends what it started,
    including a graph process a benchmark restarted (it replaces ``graph`` in ``procs``)."""

    def __init__(self, name: str):
        from stack.local import Stack as LocalStack

        self.dir = Path(tempfile.mkdtemp(prefix=f"prefstream-bench-{name}-"))
        self.broker_port, self.graph_port = free_port(), free_port()
        local = LocalStack(Settings(run_dir=self.dir, broker_port=self.broker_port, graph_port=self.graph_port,
                                    start_ray=False))
        local.up(apps=False, log=lambda _: None)  # on failure it stops what it started
        self.procs: list[Proc] = local.procs()
        self.broker, self.graph = self.procs
        local.state_file.unlink(missing_ok=True)  # from here on this object owns the processes

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.broker_port}"

    def settings(self, tag: str | None = None, **kw) -> Settings:
        """Settings on this stack with topics and a graph of their own (tag), model dir in the temp dir."""
        tag = tag or uuid.uuid4().hex[:8]
        topics = {n: f"b{tag}.{n}" for n in ("turns", "feedback", "catalog", "requests", "decisions", "dead_letter")}
        base = dict(kafka_bootstrap=self.bootstrap, graph_uri=f"redis://127.0.0.1:{self.graph_port}",
                    graph_name=f"g{tag}", topics=topics, run_dir=self.dir / "run", model_dir=self.dir / "models")
        base.update(kw)
        return Settings(**base)

    def stop(self) -> None:
        for p in reversed(self.procs):
            stop(p)
        self.procs.clear()


@contextmanager
def private_stack(name: str):
    st = PrivateStack(name)
    try:
        yield st
    finally:
        st.stop()


def child_env(s: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFSTREAM_")}
    env.update(s.to_env())
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["HF_HUB_OFFLINE"] = "1"
    env["TRANSFORMERS_OFFLINE"] = "1"
    return env


def publish_fixed_model(model_dir: Path) -> str:
    """The tests' fixed-seed GMTRouter, published and promoted in model_dir; returns its version."""
    import torch

    from trainer.model import GMTRouter, GMTRouterConfig
    from trainer.registry import ModelRegistry

    torch.manual_seed(0)
    return ModelRegistry(model_dir).publish(GMTRouter(GMTRouterConfig()), promote=True)


def llm_events():
    """The 9 LLMs of ../shared/data/llmrouter/llm_candidates.json as LLMRegistered events."""
    from trainer.simulate import LLMRouterData

    from prefstream.events import LLMRegistered

    d = LLMRouterData.load()
    return [LLMRegistered(llm_id=m, description=desc, price_in=float(pi), price_out=float(po))
            for m, desc, pi, po in zip(d.llm_ids, d.descriptions, d.price_in, d.price_out)]


def cached_embeddings(texts: list[str]) -> np.ndarray:
    """Embeddings of texts from the project's embedding cache (var/cache), encoding only the missing ones."""
    from trainer.embed import embed_texts

    return np.asarray(embed_texts(list(texts)), dtype=np.float32)


def pct(xs, q: float) -> float | None:
    return round(float(np.percentile(np.asarray(xs, dtype=float), q)), 3) if len(xs) else None


def write_json(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, default=str) + "\n")


def write_results(path: Path, res: dict, markdown) -> int:
    """The end of a bench: the load average now into ``res``, ``res`` as JSON at ``path`` and ``markdown(res)`` beside
    it (.md), the markdown printed. Returns 0 (the exit status)."""
    import os

    res["loadavg_end"] = list(os.getloadavg())
    write_json(path, res)
    md = markdown(res)
    path.with_suffix(".md").write_text(md)
    print(md)
    return 0


def model_path(data: Path, config) -> Path:
    """Where bench/quality.py leaves the GMTRouter it trained on the benchmark in ``data`` (seed, steps, k_max in the
    name, and the encoder's vector space unless it is the transformer's), so bench/history.py and bench/feedback.py
    score the same model instead of training their own."""
    from trainer.checkpoint import settings_space

    space = settings_space().rsplit(":", 1)[-1]  # a model serves only on the encoder space it was trained on
    suffix = "" if space == "transformer" else f"-{space}"
    return Path(data) / f"gmtrouter-seed{config.seed}-steps{config.steps}-k{config.k_max}{suffix}.pt"


def trained_model(data: Path, ds, config, valid_turns: int):
    """The benchmark's trained GMTRouter: loaded from model_path when bench/quality.py (or an earlier call)
    left it with the same model config, else trained with ``config`` and saved there."""
    from trainer.checkpoint import load_checkpoint, save_checkpoint
    from trainer.data import config_samples, online_samples
    from trainer.train import fit

    path = model_path(data, config)
    if path.exists():
        model = load_checkpoint(path).model
        if model.cfg == config.model:
            print(f"using the trained model {path}", flush=True)
            return model
        print(f"{path} was trained with another model config: training again", flush=True)
    res = fit(config_samples(ds, config), online_samples(ds, "valid", turns=valid_turns), config, progress=True,
              llms=ds.llms)
    save_checkpoint(res.model, path, version="eval", train_config=config, llm_catalog=ds.llms)
    return res.model
