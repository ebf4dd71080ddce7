"""What bounds the local broker's memory (issue 18): Tansu's memory storage under retention.ms, DeleteRecords,
DeleteTopics, and route topics rotated by generation, each measured as the broker's RSS.

    python bench/broker_memory.py      # -> bench/results/broker_memory.{json,md}

Phases, one private broker (stack.local, the same start-up as `prefstream up`):
1. retention: a topic created with retention.ms=1000 gets --records records of --size bytes; RSS right after and
   again after --wait s (a broker that honours retention frees them).
2. delete_records: DeleteRecords up to the end of that topic (what a janitor would call); the error if any, RSS.
3. delete_topic: DeleteTopics of that topic; RSS.
4. one_topic vs rotated: --generations rounds of --records records, into one growing topic, and into one topic
   per generation where a generation is deleted once the next two exist (a janitor's rule); RSS per round.
5. echo: the broker's produce -> fetch round trip (one partition, --echo records at 100/s) on an empty topic
   and on one holding --records records: does a long topic slow the hop?
6. compression: --events chat turns and feedback of the reliability workload, sent as the SDK sends them at a
   low rate (one record per batch) and as a burst (batched), uncompressed and gzip (PREFSTREAM_KAFKA_COMPRESSION);
   broker RSS growth per 1000 events, and every event read back.
7. names: --names empty topics created and deleted at once, each with a new name (1 and 8 partitions), and one
   name created and deleted --names times: what the broker keeps per topic name it held (why route topics reuse
   their names, streams/route_topics.py).
"""

from __future__ import annotations

import argparse
import os
import threading
import time

from common import RESULTS, command_line, machine_facts, pct, private_stack, rss_kb, write_json


def rss_mb(pid: int) -> float | None:
    kb = rss_kb(pid)
    return None if kb is None else round(kb / 1024, 1)


def fill(producer, topic: str, records: int, size: int) -> None:
    value = b"x" * size
    for i in range(records):
        producer.send(topic, key=str(i).encode(), value=value)
    producer.flush()


def echo_ms(bootstrap: str, producer, topic: str, n: int, rate: float = 100.0) -> dict:
    """p50 / p99 ms from send to fetch of n records sent one at a time at ``rate``/s (fetch_max_wait 50 ms)."""
    from kafka import KafkaConsumer, TopicPartition

    c = KafkaConsumer(bootstrap_servers=bootstrap, fetch_max_wait_ms=50, enable_auto_commit=False)
    tp = TopicPartition(topic, 0)
    c.assign([tp])
    c.seek_to_end(tp)
    c.position(tp)
    sent: dict[bytes, float] = {}
    lat: list[float] = []
    done = threading.Event()

    def read() -> None:
        while not done.is_set() and len(lat) < n:
            for recs in c.poll(timeout_ms=200).values():
                lat.extend(time.perf_counter() - sent[r.value] for r in recs if r.value in sent)

    t = threading.Thread(target=read)
    t.start()
    time.sleep(0.5)
    for i in range(n):
        key = f"echo-{i}".encode()
        sent[key] = time.perf_counter()
        producer.send(topic, value=key)
        producer.flush()
        time.sleep(1 / rate)
    t.join(timeout=30)
    done.set()
    c.close()
    return {"n": len(lat), "p50_ms": pct([x * 1e3 for x in lat], 50), "p99_ms": pct([x * 1e3 for x in lat], 99)}


def retention_phases(bs: str, admin, producer, pid: int, a: argparse.Namespace) -> dict:
    from kafka import TopicPartition
    from kafka.admin import NewTopic

    out: dict = {"rss_start_mb": rss_mb(pid)}
    admin.create_topics([NewTopic("retained", 1, 1, topic_configs={"retention.ms": "1000"})])
    fill(producer, "retained", a.records, a.size)
    out["rss_after_fill_mb"] = rss_mb(pid)
    time.sleep(a.wait)
    out["rss_after_retention_wait_mb"] = rss_mb(pid)
    try:
        admin.delete_records({TopicPartition("retained", 0): a.records}, timeout_ms=5000)
        out["delete_records_error"] = None
    except Exception as e:  # the local broker drops the connection: record what the client saw
        out["delete_records_error"] = f"{type(e).__name__}: {e}"[:200]
    out["rss_after_delete_records_mb"] = rss_mb(pid)
    admin.delete_topics(["retained"])
    time.sleep(2)
    out["rss_after_delete_topic_mb"] = rss_mb(pid)
    return out


def rotation_phases(admin, producer, pid: int, a: argparse.Namespace) -> dict:
    """RSS per round: one topic that only grows, then a topic per generation deleted two generations later."""
    from kafka.admin import NewTopic

    one, rotated = [], []
    admin.create_topics([NewTopic("one", 1, 1)])
    for _ in range(a.generations):
        fill(producer, "one", a.records, a.size)
        one.append(rss_mb(pid))
    admin.delete_topics(["one"])
    time.sleep(2)
    base = rss_mb(pid)
    for g in range(a.generations):
        admin.create_topics([NewTopic(f"gen.{g}", 1, 1)])
        fill(producer, f"gen.{g}", a.records, a.size)
        if g >= 2:
            admin.delete_topics([f"gen.{g - 2}"])
            time.sleep(1)
        rotated.append(rss_mb(pid))
    return {"rss_before_mb": base, "one_topic_rss_mb": one, "rotated_rss_mb": rotated}


def names_phase(admin, pid: int, a: argparse.Namespace) -> dict:
    """Broker RSS growth (KB per topic) over --names create+delete rounds: new names vs one name reused."""
    from kafka.admin import NewTopic

    out: dict = {"rounds": a.names}
    for label, partitions, reuse in (("new_name_1_partition", 1, False), ("new_name_8_partitions", 8, False),
                                     ("same_name_8_partitions", 8, True)):
        time.sleep(1)
        before = rss_kb(pid)
        for i in range(a.names):
            name = f"names.{label}" if reuse else f"names.{label}.{i}"
            admin.create_topics([NewTopic(name, partitions, 1)])
            admin.delete_topics([name])
        time.sleep(1)
        out[label] = {"kb_per_topic": round((rss_kb(pid) - before) / a.names, 2)}
    return out


def compression_phase(bs: str, admin, pid: int, a: argparse.Namespace) -> dict:
    """Broker RSS growth per 1000 realistic events by codec and batching; each topic is read back in full."""
    from kafka import KafkaProducer
    from kafka.admin import NewTopic
    from reliability import read_topic, workload

    from prefstream.config import Settings

    s = Settings(kafka_bootstrap=bs)

    values = [v for _, _, v in workload(a.events, 7, 64)[0]][:a.events]
    out: dict = {"events": len(values), "mean_bytes": round(sum(map(len, values)) / len(values), 1)}
    for codec in (None, "gzip"):
        for batched in (False, True):
            name = f"events.{codec or 'none'}.{'burst' if batched else 'one_per_batch'}"
            admin.create_topics([NewTopic(name, 1, 1)])
            time.sleep(1)
            before = rss_kb(pid)
            producer = KafkaProducer(bootstrap_servers=bs, acks="all", linger_ms=5 if batched else 0,
                                     compression_type=codec)
            for i, v in enumerate(values):
                producer.send(name, key=str(i).encode(), value=v)
                if not batched:
                    producer.flush()
            producer.close()
            time.sleep(1)
            grown = rss_kb(pid) - before
            got = len(read_topic(s, name, len(values), timeout=60))
            out[name] = {"mb_per_1000": round(grown / 1024 / len(values) * 1000, 3), "read_back": got}
    return out


def write_md(res: dict) -> None:
    r, o, e = res["retention"], res["rotation"], res["echo"]
    lines = [
        "# Local broker memory (Tansu memory storage)", "",
        f"`{res['command']}` — load average at start {res['machine']['loadavg_1_5_15'][0]:.2f}, "
        f"{res['records']} records of {res['size']} B per fill.", "",
        "| step | broker RSS (MB) |", "|---|---|",
        f"| start | {r['rss_start_mb']} |",
        f"| topic with retention.ms=1000 filled | {r['rss_after_fill_mb']} |",
        f"| {res['wait_s']} s later | {r['rss_after_retention_wait_mb']} |",
        f"| DeleteRecords to the end ({r['delete_records_error'] or 'ok'}) | {r['rss_after_delete_records_mb']} |",
        f"| DeleteTopics | {r['rss_after_delete_topic_mb']} |", "",
        "| generation | one topic (MB) | a topic per generation, deleted 2 later (MB) |", "|---|---|---|",
        *[f"| {i + 1} | {a} | {b} |" for i, (a, b) in enumerate(zip(o["one_topic_rss_mb"], o["rotated_rss_mb"]))], "",
        "| echo (one partition, 100/s) | p50 ms | p99 ms |", "|---|---|---|",
        *[f"| {k} | {v['p50_ms']:.1f} | {v['p99_ms']:.1f} |" for k, v in e.items()], "",
    ]
    c = res.get("compression")
    if c:
        lines += [f"{c['events']} chat turns and feedback of the reliability workload (mean {c['mean_bytes']} B):", "",
                  "| topic (codec, batching) | broker MB per 1000 events | read back |", "|---|---|---|",
                  *[f"| {k} | {v['mb_per_1000']} | {v['read_back']} |" for k, v in c.items() if isinstance(v, dict)],
                  ""]
    n = res.get("names")
    if n:
        lines += [f"{n['rounds']} topics created and deleted at once:", "",
                  "| topics | broker RSS growth, KB per topic |", "|---|---|",
                  *[f"| {k.replace('_', ' ')} | {v['kb_per_topic']} |" for k, v in n.items() if isinstance(v, dict)],
                  ""]
    (RESULTS / "broker_memory.md").write_text("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=100_000, help="records per fill")
    ap.add_argument("--size", type=int, default=1000, help="bytes per record")
    ap.add_argument("--wait", type=float, default=10.0, help="seconds to wait for retention to act")
    ap.add_argument("--generations", type=int, default=5)
    ap.add_argument("--echo", type=int, default=300, help="records per echo measurement")
    ap.add_argument("--events", type=int, default=5000, help="events per compression measurement")
    ap.add_argument("--names", type=int, default=500, help="topics created and deleted per names measurement")
    a = ap.parse_args()
    from kafka import KafkaAdminClient, KafkaProducer
    from kafka.admin import NewTopic

    res: dict = {"command": command_line(), "machine": machine_facts(), "records": a.records, "size": a.size,
                 "wait_s": a.wait}
    with private_stack("broker-memory") as st:
        bs, pid = st.bootstrap, st.broker.pid
        admin = KafkaAdminClient(bootstrap_servers=bs)
        producer = KafkaProducer(bootstrap_servers=bs, linger_ms=5)
        res["retention"] = retention_phases(bs, admin, producer, pid, a)
        res["rotation"] = rotation_phases(admin, producer, pid, a)
        admin.create_topics([NewTopic("echo.empty", 1, 1), NewTopic("echo.long", 1, 1)])
        fill(producer, "echo.long", a.records, a.size)
        res["echo"] = {"empty topic": echo_ms(bs, producer, "echo.empty", a.echo),
                       f"topic holding {a.records} records": echo_ms(bs, producer, "echo.long", a.echo)}
        producer.close()
        res["compression"] = compression_phase(bs, admin, pid, a)
        res["names"] = names_phase(admin, pid, a)
        admin.close()
    res["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
    write_json(RESULTS / "broker_memory.json", res)
    write_md(res)
    print((RESULTS / "broker_memory.md").read_text())


if __name__ == "__main__":
    main()
