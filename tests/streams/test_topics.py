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
