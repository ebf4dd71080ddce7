"""kafka-python client settings derived from Settings (bootstrap, security, broker-quirk timings)."""

from __future__ import annotations

import logging
from typing import Any, Callable

from prefstream.config import Settings

log = logging.getLogger(__name__)


def security_kwargs(s: Settings) -> dict[str, Any]:
    """SASL / TLS options passed through unchanged to every kafka-python client."""
    kw: dict[str, Any] = {"security_protocol": s.kafka_security_protocol}
    if s.kafka_sasl_mechanism:
        kw["sasl_mechanism"] = s.kafka_sasl_mechanism
        kw["sasl_plain_username"] = s.kafka_sasl_username
        kw["sasl_plain_password"] = s.kafka_sasl_password.get_secret_value() if s.kafka_sasl_password else None
    for field, arg in (("kafka_ssl_cafile", "ssl_cafile"), ("kafka_ssl_certfile", "ssl_certfile"),
                       ("kafka_ssl_keyfile", "ssl_keyfile")):
        value = getattr(s, field)
        if value is not None:
            kw[arg] = str(value)
    return kw


def producer_kwargs(s: Settings, **extra: Any) -> dict[str, Any]:
    return {"bootstrap_servers": s.kafka_bootstrap, "acks": "all", "linger_ms": 0, "retries": 5,
            "compression_type": compression(s), **security_kwargs(s), **extra}


def compression(s: Settings) -> str | None:
    """The producers' record-batch codec (None: uncompressed), for kafka-python and Faust alike."""
    return None if s.kafka_compression == "none" else s.kafka_compression


def consumer_kwargs(s: Settings, group_id: str | None, **extra: Any) -> dict[str, Any]:
    """Consumer settings chosen around Tansu's quirks (infra.md): short session timeout so a group
    join takes ~3 s, committed offsets with ``earliest`` (end offsets can be wrong), a short fetch wait
    because fetches are polled."""
    return {
        "bootstrap_servers": s.kafka_bootstrap,
        "group_id": group_id,
        "auto_offset_reset": "earliest",
        "enable_auto_commit": False,
        "fetch_max_wait_ms": s.kafka_fetch_wait_ms,
        "session_timeout_ms": s.kafka_session_timeout_ms,
        "heartbeat_interval_ms": s.kafka_heartbeat_ms,
        **security_kwargs(s),
        **extra,
    }


def topic_partitions(consumer, topic: str, stop=None, interval_s: float = 0.2,
                     timeout_s: float | None = None) -> list[int]:
    """The partition ids of ``topic``, waiting until the broker knows the topic (or ``stop``, an Event, is set, or
    ``timeout_s`` passed: then [] if still unknown)."""
    import time

    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    parts = consumer.partitions_for_topic(topic)
    while parts is None and not (stop is not None and stop.is_set()) \
            and (deadline is None or time.monotonic() < deadline):
        time.sleep(interval_s)
        parts = consumer.partitions_for_topic(topic)
    return sorted(parts or [])


def group_lag(admin, consumer, group: str, existing: set[str] | None = None,
              label: Callable[[str], str] = str) -> dict[str, int] | None:
    """{label(topic): records the group has not committed yet} over the partitions it has committed on (None: no
    commits), only of the ``existing`` topics if given (a group keeps offsets of deleted topics, and asking for a
    deleted topic's end offsets would re-create it on a broker that creates topics on demand). The local broker's
    end offsets can lag behind (infra.md), so this is a lower bound there."""
    committed = {tp: om for tp, om in admin.list_group_offsets(group).get(group, {}).items()
                 if existing is None or tp.topic in existing}
    if not committed:
        return None
    ends = consumer.end_offsets(list(committed))
    out: dict[str, int] = {}
    for tp, om in committed.items():
        if om.offset >= 0:
            out[label(tp.topic)] = out.get(label(tp.topic), 0) + max(0, ends.get(tp, 0) - om.offset)
    return out


def report_group_lag(s: Settings, group: str, set_lag, stop, every_s: float = 15.0,
                     label: Callable[[str], str] | None = None) -> None:
    """Until ``stop`` (an Event) is set: every ``every_s``, ``set_lag(name, records)`` for each topic the group
    commits on that exists, or each ``label(topic)`` summed over those topics (a metrics thread; failures are
    skipped, never raised)."""
    from kafka import KafkaAdminClient, KafkaConsumer

    admin = consumer = None
    while not stop.wait(every_s):
        try:
            admin = admin or KafkaAdminClient(bootstrap_servers=s.kafka_bootstrap, **security_kwargs(s))
            consumer = consumer or KafkaConsumer(**consumer_kwargs(s, group_id=None, allow_auto_create_topics=False))
            lags = group_lag(admin, consumer, group, set(admin.list_topics()), label or str) or {}
            for name, lag in lags.items():
                set_lag(name, lag)
        except Exception:  # the broker away for a while: try again at the next tick
            continue


def topic_configs(s: Settings) -> dict[str, dict[str, str]]:
    """The topic configs prefstream creates each topic with: retention bounds what a broker keeps of the
    short-lived topics. (The local Tansu broker accepts these but, on memory storage, enforces none; only deleting
    a topic frees its memory: bench/results/broker_memory.md.)"""
    t = s.topics
    keep = {"retention.ms": "-1"}
    return {t.turns: keep, t.feedback: keep, t.catalog: keep,
            t.requests: {"retention.ms": str(s.route_retention_ms)},
            t.decisions: {"retention.ms": str(s.route_retention_ms)},
            t.dead_letter: {"retention.ms": str(s.dead_letter_retention_ms)}}


def create_missing(admin, wanted: dict[str, dict[str, str]], partitions: int, existing: set[str]) -> list[str]:
    """Create each topic of ``wanted`` ({name: topic configs}) not in ``existing``; return those this call created
    (one another client created meanwhile is skipped)."""
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    created = []
    for topic, configs in wanted.items():
        if topic in existing:
            continue
        try:
            admin.create_topics([NewTopic(name=topic, num_partitions=partitions, replication_factor=1,
                                          topic_configs=configs)])
            created.append(topic)
        except TopicAlreadyExistsError:
            pass
    return created


def rewind(consumer, topic: str) -> None:
    """Commit offset 0 on every partition of ``topic`` for ``consumer``'s group, so a later topic of the same name
    (a generation that reuses it, or one a late producer re-creates) is read from its start."""
    from kafka import OffsetAndMetadata, TopicPartition

    parts = consumer.partitions_for_topic(topic) or set()
    if parts:
        consumer.commit({TopicPartition(topic, p): OffsetAndMetadata(0, None, -1) for p in parts})


def delete_topic(admin, name: str, what: str = "topic") -> bool | None:
    """Delete one topic: True when this call deleted it, False when it was already gone (another client was
    first), None when the broker refused or was away (logged; the caller tries again later)."""
    from kafka.errors import UnknownTopicOrPartitionError

    try:
        admin.delete_topics([name])
        return True
    except UnknownTopicOrPartitionError:
        return False
    except Exception as exc:
        log.warning("%s %s not deleted: %s", what, name, exc)
        return None


def create_topics(s: Settings, partitions: int | None = None) -> list[str]:
    """Create every prefstream topic that does not exist yet, with its ``topic_configs``; return those created."""
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=s.kafka_bootstrap, client_id="prefstream-admin", **security_kwargs(s))
    try:
        configs = topic_configs(s)
        return create_missing(admin, {t: configs[t] for t in s.topics.all()}, partitions or s.kafka_partitions,
                              set(admin.list_topics()))
    finally:
        admin.close()
