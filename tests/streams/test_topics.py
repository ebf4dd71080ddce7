"""Topics are created with their retention (issue 18): the short-lived route topics and the dead-letter topic are
bounded, the topics the graph is rebuilt from are kept."""

from __future__ import annotations

import pytest

from streams.kafka_config import create_topics

pytestmark = pytest.mark.integration


def test_created_topics_carry_their_retention(settings, monkeypatch):
    from kafka import KafkaAdminClient

    sent = []
    real = KafkaAdminClient.create_topics

    def recording(self, new_topics, *a, **kw):
        sent.extend(new_topics)
        return real(self, new_topics, *a, **kw)

    monkeypatch.setattr(KafkaAdminClient, "create_topics", recording)
    s = settings.model_copy(update={"route_retention_ms": 3_600_000})
    created = create_topics(s)  # the real broker takes them (the local one accepts the configs)
    assert sorted(created) == sorted(s.topics.all())
    configs = {t.name: t.topic_configs for t in sent}
    assert configs[s.topics.requests] == configs[s.topics.decisions] == {"retention.ms": "3600000"}
    assert configs[s.topics.dead_letter] == {"retention.ms": str(s.dead_letter_retention_ms)}
    assert configs[s.topics.turns] == configs[s.topics.feedback] == configs[s.topics.catalog] == {"retention.ms": "-1"}


def test_group_lag_counts_what_the_group_has_not_committed(settings):
    import threading

    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, OffsetAndMetadata, TopicPartition

    from streams.kafka_config import consumer_kwargs, group_lag, producer_kwargs, report_group_lag

    create_topics(settings)
    topic = settings.topics.turns
    p = KafkaProducer(**producer_kwargs(settings))
    for i in range(10):
        p.send(topic, key=b"k", value=str(i).encode(), partition=0).get(10)  # one by one: see infra.md quirk 2
    p.flush()
    p.close()
    c = KafkaConsumer(**consumer_kwargs(settings, group_id="lag-test"))
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    try:
        assert group_lag(admin, c, "lag-test") is None  # nothing committed yet
        c.assign([TopicPartition(topic, 0)])
        c.commit({TopicPartition(topic, 0): OffsetAndMetadata(4, None, -1)})
        assert group_lag(admin, c, "lag-test") == {topic: 6}
        seen, stop = {}, threading.Event()
        t = threading.Thread(target=report_group_lag, args=(settings, "lag-test", seen.__setitem__, stop, 0.2))
        t.start()
        deadline = __import__("time").monotonic() + 20
        while not seen and __import__("time").monotonic() < deadline:
            stop.wait(0.2)
        stop.set()
        t.join(10)
        assert seen == {topic: 6}
        assert group_lag(admin, c, "lag-test", existing={"another"}) is None  # offsets of a deleted topic: skipped
        assert group_lag(admin, c, "lag-test", existing={topic}, label=lambda t: "all") == {"all": 6}
    finally:
        c.close()
        admin.close()
