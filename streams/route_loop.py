"""The route path on Kafka: consume ``route.requests``, decide a micro-batch, reply on ``route.decisions``.

kafka-python rather than Faust here: Faust fixes the fetch wait at 1.5 s, which costs ~0.5 s per hop on
the local broker; kafka-python's wait is a setting (see bench/results/route_latency.*). Each request
gets exactly one reply: a decision, a fallback decision or an error with its reason. Offsets are
committed after the replies are written (at-least-once); a client keeps the first reply per request id.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Protocol

from prefstream.config import Settings
from prefstream.events import DeadLetter, InvalidEvent, RouteDecision, RouteRequest, parse_event
from prefstream.metrics import metrics, version_number
from streams import dead_letter_topics, route_topics
from streams.kafka_config import consumer_kwargs, producer_kwargs, topic_partitions

log = logging.getLogger(__name__)

MAX_AUDIT_BACKLOG = 8  # micro-batches of decisions waiting to be written to the graph
SEND_TIMEOUT_S = 60.0  # longest wait for the broker to ack a micro-batch's replies
WARM_UP_BATCHES = 3  # not measured for backpressure (the loop) nor for shedding (the engine)
BATCH_BUDGET = 0.5  # of the deadline: the most one micro-batch may take, by the measured time per request
INTAKE_FACTOR = 8  # x ROUTE_BATCH_SIZE: the most one poll takes when requests are cheap (shed under overload)
LAG_EVERY_S = 15.0  # how often the loop measures its consumer lag (a metadata round trip to the broker)


class Decider(Protocol):
    def decide(self, requests: list[RouteRequest],
               early: Callable[[list[RouteDecision]], None] | None = None) -> list[RouteDecision]:
        """One reply per request; those handed to ``early`` (sent at once) are not returned again."""
    def record_decisions(self, decisions: list[RouteDecision]) -> None: ...


def request_id_of(raw: bytes) -> str:
    """Best effort: the request id of an invalid request, so its error reply can still be matched."""
    try:
        rid = json.loads(raw).get("request_id")
        return rid if isinstance(rid, str) and 0 < len(rid) <= 128 else "unknown"
    except (ValueError, RecursionError, AttributeError):
        return "unknown"


def offset_spans(records) -> dict:
    """{partition: (offset of its first record, offset of its last) among these}."""
    from kafka import TopicPartition

    spans: dict = {}
    for r in records:
        tp = TopicPartition(r.topic, r.partition)
        lo, hi = spans.get(tp, (r.offset, r.offset))
        spans[tp] = (min(lo, r.offset), max(hi, r.offset))
    return spans


def next_offsets(records) -> dict:
    """{partition: offset after its last record}: what to commit once these records are answered."""
    from kafka import OffsetAndMetadata

    return {tp: OffsetAndMetadata(hi + 1, None, -1) for tp, (_, hi) in offset_spans(records).items()}


def static_share(consumer, topic: str, index: int, count: int, stop: threading.Event | None = None) -> list:
    """The partitions of ``topic`` that worker ``index`` of ``count`` reads: p % count == index (waits for the
    topic to exist). Offsets are still committed to the group, so a restarted worker resumes where it was."""
    from kafka import TopicPartition

    if not 0 <= index < count:
        raise ValueError(f"worker index {index} is not in [0, {count})")
    parts = topic_partitions(consumer, topic, stop)
    mine = [TopicPartition(topic, p) for p in parts if p % count == index]
    if parts and not mine:
        log.warning("router %d of %d has no partition of %s (%d partitions): it stays idle", index, count, topic,
                    len(parts))
    return mine


def reply_kind(d: RouteDecision) -> str:
    return "error" if d.error else "shed" if d.shed else "fallback" if d.fallback else "decision"


def count_replies(replies: list[RouteDecision]) -> None:
    """Prometheus: each reply by chosen LLM and kind, the router's time for it, and the version that served."""
    m = metrics()
    for d in replies:
        m.decisions.labels(d.chosen_llm_id or "none", reply_kind(d)).inc()
        m.route_latency.observe(d.latency_ms / 1000)
        if d.scorer and d.scorer != "prior":
            m.serving_version.set(version_number(d.model_version))


def measure_lag(consumer, group: str) -> None:
    """Prometheus: records of the assigned partitions not yet read (the local broker's end offsets may lag: >= 0)."""
    assigned = list(consumer.assignment())
    if not assigned:
        return
    ends = consumer.end_offsets(assigned)
    behind = sum(max(ends.get(tp, 0) - consumer.position(tp), 0) for tp in assigned)
    metrics().consumer_lag.labels(group, assigned[0].topic).set(behind)


def _log_failed_commit(_offsets, result) -> None:
    if isinstance(result, Exception):  # e.g. a rebalance moved the partition: its new owner answers it again
        log.warning("commit failed (%s); these requests may be answered twice", result)


class RouteLoop:
    def __init__(self, s: Settings, decider: Decider, client_id: str = "router",
                 on_batch: Callable[[int, float], None] | None = None, member: tuple[int, int] = (0, 1)):
        """``on_batch(records, handle_ms)`` is called after each micro-batch is decided and its replies sent
        (a hook for benchmarks and metrics; it runs on the loop's thread, so it must be quick). ``member``:
        (index, count) of this loop among the router workers, for ``router_assignment=static``."""
        self.s = s
        self.member = member
        self.decider = decider
        self.on_batch = on_batch
        self.group_id = s.router_group
        self.client_id = client_id
        self.stop_event = threading.Event()
        self.handled = 0
        self.per_request_ms = 0.0  # running estimate of the time one request of a micro-batch costs
        self._batches = 0
        self._generation: int | None = None  # the route-topic generation the assignment follows (route_topics)
        # audit writes to the graph happen off the reply path, in order, one batch at a time; at most
        # MAX_AUDIT_BACKLOG batches wait, then the loop slows down rather than letting memory grow
        self._audit = ThreadPoolExecutor(max_workers=1, thread_name_prefix="audit")
        self._audit_slots = threading.BoundedSemaphore(MAX_AUDIT_BACKLOG)

    def run(self, ready: threading.Event | None = None) -> None:
        s = self.s
        consumer = self._consumer()
        producer = route_topics.GenerationProducer(s, client_id=self.client_id,
                                                   **producer_kwargs(s, linger_ms=s.route_reply_linger_ms))
        if ready is not None:
            ready.set()
        # One micro-batch in flight: its replies are acked by the broker while the next batch is decided,
        # and its offsets are committed only after that (at-least-once: a reply is never committed unsent).
        previous: tuple[list, list] | None = None  # (reply futures, records)
        lag_at = 0.0
        try:
            while not self.stop_event.is_set():
                previous = self._rotate(consumer, previous)
                records = self._poll(consumer)
                if not records:
                    if previous is not None:  # nothing new: finish the last batch now
                        self._settle(previous, consumer)
                        previous = None
                    continue
                t0 = time.perf_counter()
                sent = self._handle(records, producer)
                handle_ms = (time.perf_counter() - t0) * 1000
                metrics().route_batch.observe(handle_ms / 1000)
                self.measured(len(records), handle_ms)
                if self.on_batch is not None:
                    self.on_batch(len(records), handle_ms)
                lag_at = self._lag(consumer, lag_at)
                if previous is not None and not self._settle(previous, consumer):
                    previous = None  # read again from the failed batch on, this one included
                    continue
                previous = (sent, records)
        finally:
            try:
                if previous is not None:
                    self._settle(previous, consumer, wait_commit=True)
            finally:
                self._audit.shutdown(wait=True)
                consumer.close()
                producer.close()

    def _consumer(self):
        """The requests consumer: its static share of the partitions, or a member of the group protocol."""
        from kafka import KafkaConsumer

        s = self.s
        kw = consumer_kwargs(s, self.group_id, max_poll_records=s.route_batch_size)
        if s.router_assignment == "group":
            if route_topics.enabled(s):
                raise ValueError("route-topic generations (ROUTE_GENERATION_S > 0) need ROUTER_ASSIGNMENT=static")
            return KafkaConsumer(s.topics.requests, client_id=self.client_id, **kw)
        consumer = KafkaConsumer(client_id=self.client_id, **kw)
        self._follow(consumer)
        return consumer

    def _follow(self, consumer) -> None:
        """Assign this worker's static share of the request topics of the current window (route_topics: one
        topic, or the generations around now, created first where missing and the old ones deleted, plus the
        plain topic, so a client that does not use generations is still answered, on the plain reply topic)."""
        s = self.s
        topics = [s.topics.requests]
        if route_topics.enabled(s):
            self._generation = route_topics.current(s)
            topics += route_topics.window(s, s.topics.requests, self._generation)
            try:
                route_topics.maintain(s, self._generation, consumer=consumer)  # resets the group's offsets
            except Exception as exc:  # the broker away for a moment: the next generation tries again
                log.warning("route topics not maintained: %s", exc)
        consumer.assign([tp for topic in topics for tp in static_share(consumer, topic, *self.member, self.stop_event)])

    def _rotate(self, consumer, previous):
        """When a new route-topic generation begins: settle the batch in flight (its commit awaited), then follow
        the new window. Partitions in both windows keep their positions. Returns the batch still in flight."""
        if not route_topics.enabled(self.s) or route_topics.current(self.s) == self._generation:
            return previous
        if previous is not None:
            self._settle(previous, consumer, wait_commit=True)
        self._follow(consumer)
        return None

    def measured(self, n: int, handle_ms: float, alpha: float = 0.2) -> None:
        """Take one micro-batch's time into the per-request estimate (not the first WARM_UP_BATCHES: they load
        the model and open connections)."""
        self._batches += 1
        if n > 0 and self._batches > WARM_UP_BATCHES:
            x = handle_ms / n
            self.per_request_ms = x if self.per_request_ms == 0 else (1 - alpha) * self.per_request_ms + alpha * x

    def batch_cap(self) -> int:
        """Backpressure: the most requests to take in one poll, so that handling them fits in BATCH_BUDGET of the
        deadline at the measured cost per request taken (the rest wait in the broker). Requests shed under overload
        cost little, so a backlog raises the cap up to INTAKE_FACTOR x ROUTE_BATCH_SIZE: the router sees its queue
        early, decides the newest that fit and sheds the older at once (workers/engine.py) instead of letting
        them go stale in the broker."""
        if self.per_request_ms <= 0:
            return self.s.route_batch_size
        fits = int(BATCH_BUDGET * self.s.route_deadline_ms / self.per_request_ms)
        return max(1, min(INTAKE_FACTOR * self.s.route_batch_size, fits))

    def _poll(self, consumer) -> list:
        s = self.s
        cap = self.batch_cap()
        batch = consumer.poll(timeout_ms=100, max_records=cap)
        records = [r for rs in batch.values() for r in rs]
        if records and len(records) < cap and s.route_batch_wait_ms > 0:
            more = consumer.poll(timeout_ms=int(s.route_batch_wait_ms), max_records=cap - len(records))
            records += [r for rs in more.values() for r in rs]
        return records

    def _settle(self, batch: tuple[list, list], consumer, wait_commit: bool = False) -> bool:
        """Wait until the broker has the batch's replies, then commit its requests' offsets (without waiting
        for the commit unless ``wait_commit``: a lost commit only means answering again). If a reply could
        not be written, rewind to the batch's first records instead (they are answered again) -> False."""
        from kafka.errors import KafkaError

        sent, records = batch
        try:
            for f in sent:
                f.get(timeout=SEND_TIMEOUT_S)
        except KafkaError as exc:  # after the producer's own retries, or the wait timed out
            log.error("a reply could not be written (%s); reading its batch again", exc)
            assigned = consumer.assignment()
            for tp, (first, _) in offset_spans(records).items():
                if tp in assigned:
                    consumer.seek(tp, first)
            return False
        try:
            if wait_commit:
                consumer.commit(next_offsets(records))
            else:
                consumer.commit_async(next_offsets(records), callback=_log_failed_commit)
        except KafkaError as exc:  # e.g. a rebalance moved the partition: its new owner answers it again
            _log_failed_commit(None, exc)
        self.handled += len(records)
        return True

    def _handle(self, records, producer) -> list:
        """Decide the records; returns the futures of the replies (and dead letters) sent for them."""
        s = self.s
        requests: list[RouteRequest] = []
        replies: list[RouteDecision] = []
        sent = []
        came_from: dict[str, str] = {}  # request id -> the topic it was read from (its reply's generation)

        def reply(ds: list[RouteDecision]) -> None:  # on the reply topic of each request's generation
            replies.extend(ds)
            for d in ds:
                topic = route_topics.reply_topic(s, came_from.get(d.request_id, s.topics.requests))
                sent.append(producer.send(topic, key=(d.user_id or d.request_id).encode(), value=d.to_bytes()))
        for r in records:
            try:
                q = parse_event(r.value, RouteRequest)
                requests.append(q)
                came_from[q.request_id] = r.topic
            except Exception as exc:  # InvalidEvent, or anything unforeseen: never a poison pill
                reason = str(exc) if isinstance(exc, InvalidEvent) else f"could not parse: {type(exc).__name__}: {exc}"
                dl = DeadLetter.of(r.topic, r.value, reason, r.partition, r.offset)
                sent.append(producer.send(dead_letter_topics.topic(s), key=r.topic.encode(), value=dl.to_bytes()))
                rid = request_id_of(r.value)
                came_from[rid] = r.topic
                reply([RouteDecision(request_id=rid, error=reason)])
        if requests:
            try:  # shed replies leave first (``early``), the decided ones after
                reply(self.decider.decide(requests, early=reply))
            except Exception as exc:  # never leave a request unanswered
                log.exception("decide failed for %d requests", len(requests))
                answered = {d.request_id for d in replies}
                reply([RouteDecision(request_id=q.request_id, user_id=q.user_id,
                                     error=f"router error: {type(exc).__name__}: {exc}")
                       for q in requests if q.request_id not in answered])
        count_replies(replies)
        self._audit_slots.acquire()
        fut = self._audit.submit(self.decider.record_decisions, [d for d in replies if d.chosen_llm_id is not None])
        fut.add_done_callback(lambda _: self._audit_slots.release())
        return sent

    def _lag(self, consumer, last: float) -> float:
        """Measure the consumer lag if LAG_EVERY_S passed since ``last``; returns when it was last measured."""
        if time.monotonic() - last < LAG_EVERY_S:
            return last
        try:
            measure_lag(consumer, self.group_id)
        except Exception as exc:  # a metric must never stop the loop
            log.debug("lag not measured: %s", exc)
        return time.monotonic()

    def stop(self) -> None:
        self.stop_event.set()


def serve_forever(loop: RouteLoop, on_ready=None) -> None:
    ready = threading.Event()
    t = threading.Thread(target=loop.run, args=(ready,), name="route-loop", daemon=True)
    t.start()
    if ready.wait(timeout=120) and on_ready is not None:
        on_ready()
    try:
        while t.is_alive():
            time.sleep(0.5)
    except KeyboardInterrupt:
        loop.stop()
        t.join(timeout=10)
