"""`prefstream status` and `prefstream doctor`: what each component says about itself right now, whether or not
this shell started it, and for each failure the fix.

Every probe first makes one TCP connect with a short timeout, so a missing component costs a fraction of a
second, never a client library's 30 s bootstrap wait. Heavy libraries (torch) are never imported here.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from prefstream.config import Settings
from prefstream.errors import UP, _host_port, reachable

TIMEOUT_MS = 3000
CYCLES_FILE = "cycles.jsonl"  # trainer/refresh.py writes it into the model registry
RATES_FILE = "count.json"  # trainer/count_scorer.py writes it into the model registry


@dataclass
class Check:
    component: str
    ok: bool
    detail: str
    fix: str = ""


def _broker_servers(s: Settings) -> list[tuple[str, int]]:
    return [_host_port(a.strip(), 9092) for a in s.kafka_bootstrap.split(",") if a.strip()]


def _admin(s: Settings):
    from kafka import KafkaAdminClient

    from streams.kafka_config import security_kwargs

    return KafkaAdminClient(bootstrap_servers=s.kafka_bootstrap, client_id="prefstream-status",
                            request_timeout_ms=TIMEOUT_MS, **security_kwargs(s))


def _consumer(s: Settings):
    from kafka import KafkaConsumer

    from streams.kafka_config import security_kwargs

    return KafkaConsumer(bootstrap_servers=s.kafka_bootstrap, group_id=None, enable_auto_commit=False,
                         allow_auto_create_topics=False, request_timeout_ms=TIMEOUT_MS + 1000, **security_kwargs(s))


def _partitions(consumer, topic: str) -> list:
    from kafka import TopicPartition

    return [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]


def _lag(admin, consumer, group: str, existing: set[str]) -> int | None:
    """Records the group has not committed yet, over the partitions of existing topics it has committed on (None:
    no commits)."""
    from streams.kafka_config import group_lag

    lag = group_lag(admin, consumer, group, existing)
    return None if lag is None else int(sum(lag.values()))


def _dead_letters_last_hour(consumer, topics: list[str]) -> int:
    tps = [tp for topic in topics for tp in _partitions(consumer, topic)]
    if not tps:
        return 0
    ends = consumer.end_offsets(tps)
    since = consumer.offsets_for_times({tp: int((time.time() - 3600) * 1000) for tp in tps})
    return int(sum(ends[tp] - (since[tp].offset if since.get(tp) else ends[tp]) for tp in tps))


def broker_status(s: Settings) -> list[Check]:
    if not any(reachable(h, p, timeout=1.0) for h, p in _broker_servers(s)):
        return [Check("broker", False, f"no Kafka broker at {s.kafka_bootstrap}",
                      f"set PREFSTREAM_KAFKA_BOOTSTRAP or {UP}")]
    from streams import dead_letter_topics
    from streams.event_ingest import generations_group
    from streams.faust_app import INGEST_GROUP

    admin, consumer = _admin(s), _consumer(s)
    try:
        topics = set(admin.list_topics())
        missing = [t for t in s.topics.all() if t not in topics]
        out = [Check("broker", not missing, f"{s.kafka_bootstrap}: {len(topics)} topics"
                     + (f", missing {', '.join(missing)}" if missing else ""),
                     'run "prefstream doctor" for the fix' if missing else "")]
        groups = [("ingest lag", INGEST_GROUP), ("router lag", s.router_group)]
        if s.event_generation_s > 0:  # the reader of the turns and feedback generations (streams/event_ingest.py)
            groups.insert(1, ("event lag", generations_group(INGEST_GROUP)))
        for name, group in groups:
            lag = _lag(admin, consumer, group, topics)
            out.append(Check(name, True, f"group {group}: " + ("no committed offsets yet" if lag is None
                                                                 else f"{lag} records behind")))
        dead = dead_letter_topics.topics(s, topics)  # the plain topic and its generations
        if dead:
            n = _dead_letters_last_hour(consumer, dead)
            where = s.topics.dead_letter + (f" and {len(dead) - 1} generations" if len(dead) > 1 else "")
            out.append(Check("dead letters", n == 0, f"{n} in the last hour on {where}",
                             f"read them: kafka consumer subscribed to the pattern {dead_letter_topics.pattern(s)!r} "
                             "(each carries its reason)" if n else ""))
        return out
    finally:
        consumer.close()
        admin.close()


def _graph_store(s: Settings):
    """(store, None) for a reachable graph server (schema untouched), else (None, the failed check)."""
    host, port = _host_port(s.graph_uri, 7687 if s.graph_backend == "neo4j" else 6379)
    if not reachable(host, port, timeout=1.0):
        return None, Check("graph", False, f"no graph server at {s.graph_uri} ({s.graph_backend})",
                           f"set PREFSTREAM_GRAPH_URI / PREFSTREAM_GRAPH_BACKEND, or {UP}")
    from graphstore import open_store

    return open_store(s, ensure_schema=False), None


def graph_status(s: Settings) -> list[Check]:
    store, down = _graph_store(s)
    if down:
        return [down]
    try:
        counts = {label: store.count(label) for label in ("User", "Turn", "Feedback")}
    finally:
        store.close()
    return [Check("graph", True, f"{s.graph_uri} graph {s.graph_name}: "
                  + ", ".join(f"{n} {label.lower()}s" for label, n in counts.items()))]


def counts_checked(counts: dict) -> str:
    """What a cycle's check of the kept win counts (trainer.refresh.RefreshTrainer.check_counts) did, when it did
    more than find them right: "" otherwise."""
    if "error" in counts:
        return f"; its check of the kept win counts failed: {counts['error']}"
    if counts.get("rebuilt"):
        return (f"; it rebuilt the kept win counts of {counts['rebuilt']} of the {counts['users']} users it checked "
                f"({', '.join(counts.get('rebuilt_ids', []))}; `prefstream counts` checks every user)")
    return ""


def model_status(s: Settings) -> list[Check]:
    root = Path(s.model_dir)
    current = root / "CURRENT"
    version = current.read_text().strip() if current.exists() else ""
    if version and version != "count":
        serving = f"model {version}"
    else:
        pairs = json.loads((root / RATES_FILE).read_text()).get("pairs", 0) if (root / RATES_FILE).exists() else 0
        serving = f"the count-based scorer (global rates from {pairs} comparisons)"
    out = [Check("model", True, f"{root}: serving {serving}")]
    cycles = root / CYCLES_FILE
    lines = cycles.read_text().splitlines() if cycles.exists() else []
    if lines:
        last = json.loads(lines[-1])
        ago = time.time() - float(last.get("cycle_started", time.time()))
        out.append(Check("trainer", True, f"last cycle {ago / 60:.0f} min ago: {last.get('reason', '')}"
                         + counts_checked((last.get("window") or {}).get("counts") or {})))
    else:
        out.append(Check("trainer", True, "no trainer cycle yet"))
    return out


def ray_status(s: Settings) -> list[Check]:
    if s.ray_address in ("local", "auto", ""):
        host, port = "127.0.0.1", s.ray_port
    else:
        host, port = _host_port(s.ray_address.removeprefix("ray://"), 6379)
    ok = reachable(host, port, timeout=1.0)
    return [Check("ray", ok, f"Ray GCS at {host}:{port} " + ("reachable" if ok else "not reachable"),
                  "" if ok else f"set PREFSTREAM_RAY_ADDRESS or {UP}")]


def gateway_status(s: Settings) -> list[Check]:
    """The gateway's /readyz; not listening is fine (it is optional), the process row of `up` says if it died."""
    import urllib.error
    import urllib.request

    url = f"http://{s.gateway_host}:{s.gateway_port}/readyz"
    if not reachable(s.gateway_host, s.gateway_port, timeout=1.0):
        return [Check("gateway", True, f"not listening on {s.gateway_host}:{s.gateway_port} (optional: "
                                       "`prefstream gateway`)")]
    try:
        with urllib.request.urlopen(url, timeout=2.0) as r:
            body = json.loads(r.read())
    except urllib.error.HTTPError as exc:
        body = json.loads(exc.read() or b"{}")
    ok = bool(body.get("ok"))
    return [Check("gateway", ok, f"{url}: {body.get('routable_llms', 0)} LLMs with an upstream",
                  "" if ok else "register upstreams: prefstream llms register FILE.yaml")]


def _guarded(probe: Callable[[Settings], list[Check]], name: str, s: Settings) -> list[Check]:
    """A probe that fails in a way it did not foresee is one failed row, never a traceback."""
    try:
        return probe(s)
    except Exception as exc:  # noqa: BLE001 - reported as the component's state
        return [Check(name, False, f"{type(exc).__name__}: {exc}".splitlines()[0][:200])]


def status(s: Settings) -> list[Check]:
    return [c for probe, name in ((broker_status, "broker"), (graph_status, "graph"), (model_status, "model"),
                                  (ray_status, "ray"), (gateway_status, "gateway")) for c in _guarded(probe, name, s)]


# --- doctor: the configuration against the real servers, with a fix for each failure ---------------------------
def broker_doctor(s: Settings, fix: bool) -> list[Check]:
    if not any(reachable(h, p, timeout=1.0) for h, p in _broker_servers(s)):
        return [Check("broker", False, f"no Kafka broker at {s.kafka_bootstrap}",
                      f"set PREFSTREAM_KAFKA_BOOTSTRAP to your cluster, or {UP}")]
    from streams.kafka_config import create_topics

    admin = _admin(s)
    try:
        version = ".".join(map(str, admin.config.get("api_version") or ()))
        out = [Check("broker", True, f"{s.kafka_bootstrap} answers the Kafka protocol"
                     + (f" (API version {version})" if version else ""))]
        topics = set(admin.list_topics())
        missing = [t for t in s.topics.all() if t not in topics]
        if missing and fix:
            created = create_topics(s)
            out.append(Check("topics", True, f"created {', '.join(created)} ({s.kafka_partitions} partitions)"))
            missing = [t for t in missing if t not in created]
        described = {d.get("topic", d.get("name")): len(d["partitions"]) for d in admin.describe_topics(
            [t for t in s.topics.all() if t not in missing])}
        for t in s.topics.all():
            if t in missing:
                out.append(Check(f"topic {t}", False, "missing",
                                 f'"prefstream doctor --fix" creates it ({s.kafka_partitions} partitions, '
                                 "PREFSTREAM_KAFKA_PARTITIONS), or create it with your cluster's tools"))
            else:
                out.append(Check(f"topic {t}", described.get(t, 0) > 0, f"{described.get(t, 0)} partitions"))
        return out
    finally:
        admin.close()


def graph_doctor(s: Settings, fix: bool) -> list[Check]:
    store, down = _graph_store(s)
    if down:
        return [down]
    try:
        missing = store.missing_indexes()
        if missing and fix:
            store.ensure_schema()
            missing = store.missing_indexes()
        counts = win_counts_doctor(store, fix)
    finally:
        store.close()
    return [Check("graph", True, f"{s.graph_uri} ({s.graph_backend}) answers"),
            Check("graph indexes", not missing, f"missing {', '.join(missing)}" if missing else "all present",
                  '"prefstream doctor --fix" creates them (so does any ingest worker at start)' if missing else ""),
            counts]


def win_counts_doctor(store, fix: bool) -> Check:
    """The kept win counts of the most recently active users (a batch: graphstore.base.RECOUNT_USERS) against their
    stored ratings (graphstore.count_check); with ``fix``, those that differ are rebuilt."""
    from graphstore.base import RECOUNT_USERS
    from graphstore.count_check import check_win_counts

    users = [u for u, _ in store.active_users()[:RECOUNT_USERS]]
    report = check_win_counts(store, users, repair=fix)
    who = f"the {len(users)} most recent users' kept win counts"
    if not report.off:
        return Check("graph win counts", True, f"{who} match their ratings")
    if report.ok:
        return Check("graph win counts", True, f"{len(report.off)} of {who} differed from their ratings: rebuilt")
    n = len(report.still_off) if report.repaired else len(report.off)
    return Check("graph win counts", False, f"{n} of {who} differ from their ratings",
                 '"prefstream doctor --fix" rebuilds them; "prefstream counts --repair" checks and rebuilds every user')


def model_doctor(s: Settings, fix: bool) -> list[Check]:
    root = Path(s.model_dir)
    if not root.exists() and fix:
        root.mkdir(parents=True)
    if not root.is_dir():
        return [Check("model registry", False, f"{root} does not exist",
                      '"prefstream doctor --fix" creates it, or set PREFSTREAM_MODEL_DIR')]
    current = root / "CURRENT"
    version = current.read_text().strip() if current.exists() else ""
    if version and version != "count" and not (root / version / "model.pt").exists():
        return [Check("model registry", False, f"CURRENT names {version}, which has no model.pt",
                      f'promote an existing version or remove {current} (counting then serves)')]
    return [Check("model registry", True, f"{root}: serving " + (f"model {version}" if version and version != "count"
                                                                 else "the count-based scorer (no model promoted; "
                                                                      'run "prefstream train --once" after feedback)'))]


def doctor(s: Settings, fix: bool = False) -> list[Check]:
    return [c for probe, name in ((lambda x: broker_doctor(x, fix), "broker"), (lambda x: graph_doctor(x, fix), "graph"),
                                  (lambda x: model_doctor(x, fix), "model registry"), (ray_status, "ray"))
            for c in _guarded(probe, name, s)]


def print_checks(checks: list[Check], as_json: bool) -> int:
    if as_json:
        print(json.dumps([asdict(c) for c in checks], indent=2))
    else:
        for c in checks:
            print(f"{'ok ' if c.ok else 'BAD'}  {c.component:<13} {c.detail}" + (f"\n     fix: {c.fix}" if c.fix else ""))
    return 0 if all(c.ok for c in checks) else 1
