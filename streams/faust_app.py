"""The Faust ingest app: one agent per input topic, each batch validated, embedded and written.

Offsets are acked only after the batch's graph write and its dead letters are done (``take_events``
acks a batch when the agent asks for the next one), so delivery is at-least-once; the graph writes are
idempotent by event id, so a redelivered batch changes nothing.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Callable

from prefstream.config import Settings
from prefstream.metrics import metrics, reason_class
from streams import dead_letter_topics, event_topics
from streams.event_ingest import EventGenerationIngest, generations_group
from streams.ingest import BatchResult, Ingestor, RawMessage
from streams.kafka_config import compression

log = logging.getLogger(__name__)


def faust_credentials(s: Settings):
    """Faust's view of the Kafka security settings: TLS whenever the protocol says so (the system's CAs unless
    ``kafka_ssl_cafile``), SASL over it when a mechanism is set."""
    import faust

    ctx = None
    if s.kafka_security_protocol in ("SSL", "SASL_SSL"):
        import ssl

        ctx = ssl.create_default_context(cafile=str(s.kafka_ssl_cafile) if s.kafka_ssl_cafile else None)
        if s.kafka_ssl_certfile:
            ctx.load_cert_chain(str(s.kafka_ssl_certfile), str(s.kafka_ssl_keyfile) if s.kafka_ssl_keyfile else None)
    if s.kafka_sasl_mechanism:
        password = s.kafka_sasl_password.get_secret_value() if s.kafka_sasl_password else None
        return faust.SASLCredentials(username=s.kafka_sasl_username, password=password,
                                     mechanism=s.kafka_sasl_mechanism, ssl_context=ctx)
    if ctx is not None:
        return faust.SSLCredentials(ctx)
    return None


INGEST_GROUP = "prefstream-ingest"  # the Faust app id is its Kafka consumer group


def replay_group() -> str:
    """A fresh consumer group for `prefstream ingest --from-beginning`.

    The recovery path when the graph lost writes it had acknowledged (the local FalkorDB persists by
    snapshot only, so a kill -9 loses what came after the last one): a worker in a new group reads every
    input topic from offset 0, and since every write is a MERGE keyed by event id, the replay fills the
    gaps and duplicates nothing. (A new group rather than rewinding the old one: the local broker keeps a
    group's assignor protocol, so an outside tool cannot join a Faust group to reset its offsets.)
    """
    return f"{INGEST_GROUP}-replay-{int(time.time())}"


def faust_app(s: Settings, app_id: str):
    """The Faust app with prefstream's Kafka settings: raw bytes in and out, offsets committed every
    ``ingest_batch_size`` events or half a second, topics declared by the stack, not by Faust. Its working folder
    (it keeps no table: the store is memory) is ``<run_dir>/faust/<app id>``, not a new folder in the current
    directory."""
    import faust

    datadir = s.run_dir / "faust" / app_id
    datadir.parent.mkdir(parents=True, exist_ok=True)
    return faust.App(
        app_id,
        datadir=str(datadir),
        broker=[f"kafka://{h}" for h in s.kafka_bootstrap.split(",")],
        broker_credentials=faust_credentials(s),
        value_serializer="raw",
        key_serializer="raw",
        broker_session_timeout=s.kafka_session_timeout_ms / 1000,  # Tansu: joins wait half of this
        broker_heartbeat_interval=s.kafka_heartbeat_ms / 1000,
        broker_commit_every=s.ingest_batch_size,
        broker_commit_interval=0.5,
        producer_compression_type=compression(s),
        consumer_auto_offset_reset="earliest",
        topic_partitions=s.kafka_partitions,
        topic_allow_declare=False,
        web_enabled=False,
        store="memory://",
    )


def create_app(s: Settings, ingestor_factory: Callable[[], Ingestor], app_id: str = INGEST_GROUP,
               on_ready: Callable[[], None] | None = None):
    """Build the app; the ingestor (graph connection, encoder) is created when the worker starts."""
    import faust

    app = faust_app(s, app_id)
    state: dict[str, Ingestor] = {}
    state_lock = threading.Lock()
    dead_topics: dict[str, faust.TopicT] = {}  # by name: one, or a generation each (dead_letter_topics)

    def dead_topic() -> faust.TopicT:
        name = dead_letter_topics.topic(s)
        if name not in dead_topics:
            dead_topics.clear()
            dead_topics[name] = app.topic(name, value_type=bytes, value_serializer="raw")
        return dead_topics[name]

    def ingestor() -> Ingestor:  # agents start together: build the one ingestor once
        with state_lock:
            if "i" not in state:
                state["i"] = ingestor_factory()
            return state["i"]

    async def publish_dead(result: BatchResult) -> None:
        for dl in result.dead:
            metrics().dead_letters.labels(reason_class(dl.reason)).inc()
            fut = await dead_topic().send(key=dl.topic.encode(), value=dl.to_bytes())
            await fut
            log.warning("dead letter from %s: %s", dl.topic, dl.reason)

    async def write_until_done(loop, handle, msgs: list[RawMessage], topic_name: str) -> BatchResult:
        """Retry a batch whose graph write failed (store down) with backoff; never skip it, since its
        offsets are acked only after this returns."""
        delay = 0.2
        while True:
            try:
                ing = await loop.run_in_executor(None, ingestor)
                return await loop.run_in_executor(None, handle, ing, msgs)
            except Exception as exc:
                log.warning("ingest of %d messages from %s failed (%s: %s); retrying in %.1f s", len(msgs),
                            topic_name, type(exc).__name__, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    def add_agent(topic_name: str, handle: Callable[[Ingestor, list[RawMessage]], BatchResult],
                  event_type: str) -> None:
        topic = app.topic(topic_name, value_type=bytes, value_serializer="raw", key_serializer="raw")

        async def agent(stream):
            loop = asyncio.get_running_loop()
            async for events in stream.take_events(s.ingest_batch_size, within=s.ingest_batch_wait_s):
                msgs = [RawMessage(e.value if isinstance(e.value, bytes) else bytes(e.value or b""), topic_name,
                                   e.message.partition, e.message.offset) for e in events]
                result = await write_until_done(loop, handle, msgs, topic_name)
                metrics().ingested.labels(event_type).inc(result.accepted)
                await publish_dead(result)

        agent.__name__ = f"ingest_{topic_name.replace('.', '_').replace('-', '_')}"
        app.agent(topic, name=agent.__name__)(agent)

    if on_ready is not None:
        @app.task
        async def _warm_up() -> None:  # load the encoder and connect to the graph before saying ready
            await asyncio.get_running_loop().run_in_executor(None, ingestor)
            on_ready()

    if event_topics.enabled(s):  # the turns and feedback generations: read beside the agents (event_ingest.py)
        generations = EventGenerationIngest(s, ingestor, generations_group(app_id), delete=app_id == INGEST_GROUP)

        @app.task
        async def _follow_generations() -> None:
            threading.Thread(target=generations.run_forever, name="event-generations", daemon=True).start()

    add_agent(s.topics.catalog, Ingestor.llms, "llm_registered")
    add_agent(s.topics.turns, Ingestor.turns, "chat_turn")
    add_agent(s.topics.feedback, Ingestor.feedback, "feedback")
    return app


def run_worker(s: Settings, loglevel: str = "warning", ready_name: str | None = None,
               group: str = INGEST_GROUP) -> None:
    """Run the ingest app in this process until it is stopped (SIGTERM / Ctrl-C)."""
    import faust

    from prefstream.metrics import metrics_port_for, serve_metrics
    from prefstream.ready import ready_callback
    from streams.ingest import build_ingestor

    if serve_metrics(metrics_port_for(s.metrics_port, "ingest")):
        from streams.kafka_config import report_group_lag

        lag = metrics().consumer_lag
        threading.Thread(target=report_group_lag, name="lag", daemon=True,
                         args=(s, group, lambda topic, n: lag.labels(group, topic).set(n), threading.Event())).start()
        if event_topics.enabled(s):  # one label per input topic, summed over its generations
            gen_group = generations_group(group)
            threading.Thread(target=report_group_lag, name="lag-generations", daemon=True,
                             args=(s, gen_group, lambda base, n: lag.labels(gen_group, base).set(n), threading.Event()),
                             kwargs={"label": lambda t: (event_topics.parse(s, t) or (t, 0))[0]}).start()

    app = create_app(s, lambda: build_ingestor(s), app_id=group, on_ready=ready_callback(s, ready_name))
    faust.Worker(app, loglevel=loglevel, quiet=True, redirect_stdouts=False).execute_from_commandline()
