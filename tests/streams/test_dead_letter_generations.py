"""The dead-letter topic by generation (streams/dead_letter_topics.py, issue 18: the local broker enforces no
retention, so the dead-letter topic is bounded by deleting whole generations once the retention time passed)."""

from __future__ import annotations

import json
import re

import pytest

from prefstream.config import Settings
from streams import dead_letter_topics as dlt

HOUR = 3600


def hourly(**kw) -> Settings:
    return Settings(dead_letter_generation_s=HOUR, dead_letter_retention_ms=2 * HOUR * 1000, **kw)


def test_dead_letters_are_named_by_the_generation_of_their_send_time():
    s, base = hourly(), Settings().topics.dead_letter
    assert dlt.topic(s, now_s=5 * HOUR + 1) == f"{base}.g5"
    assert dlt.topic(Settings(), now_s=5 * HOUR) == base  # off: one topic
    names = [f"{base}.g12", "chat.turns.g3", base, f"{base}.g3", f"{base}.x", f"other.{base}.g1"]
    assert dlt.topics(s, names) == [base, f"{base}.g3", f"{base}.g12"]
    p = re.compile(dlt.pattern(s))
    assert [n for n in names if p.fullmatch(n)] == [f"{base}.g12", base, f"{base}.g3"]


def test_a_generation_expires_the_retention_time_after_it_closed():
    s, base = hourly(), Settings().topics.dead_letter
    closed_at = 8 * HOUR  # generation 7 closes when generation 8 begins
    assert not dlt.expired(s, f"{base}.g7", now_s=closed_at + 2 * HOUR - 1)
    assert dlt.expired(s, f"{base}.g7", now_s=closed_at + 2 * HOUR)
    assert not dlt.expired(s, base, now_s=10**9)  # the plain topic is never deleted
    assert not dlt.expired(s, "chat.turns.g7", now_s=10**9)  # nor another base's generation
    forever = s.model_copy(update={"dead_letter_retention_ms": -1})
    assert not dlt.expired(forever, f"{base}.g7", now_s=10**9)
    assert not dlt.expired(Settings(), f"{base}.g7", now_s=10**9)  # generations off: nothing deleted


def test_the_local_stack_rotates_its_dead_letter_topic_unless_told_otherwise(tmp_path):
    from prefstream.options import with_stack_generations
    from stack.local import LOCAL_DEAD_LETTER_GENERATION_S, local_settings

    assert LOCAL_DEAD_LETTER_GENERATION_S > 0
    assert local_settings(Settings(run_dir=tmp_path)).dead_letter_generation_s == LOCAL_DEAD_LETTER_GENERATION_S
    assert local_settings(Settings(run_dir=tmp_path, dead_letter_generation_s=0)).dead_letter_generation_s == 0
    run = tmp_path / "run"
    run.mkdir()
    (run / "stack.json").write_text(json.dumps({"procs": [], "settings": {
        "kafka_bootstrap": "127.0.0.1:19092", "dead_letter_generation_s": HOUR}}))
    mine = Settings(run_dir=run, kafka_bootstrap="127.0.0.1:19092")
    assert with_stack_generations(mine).dead_letter_generation_s == HOUR  # `prefstream publish` follows the stack


@pytest.mark.integration
def test_maintain_creates_the_current_generations_and_deletes_only_expired_ones(settings):
    from kafka import KafkaAdminClient

    from streams.kafka_config import create_missing

    s = settings.model_copy(update={"dead_letter_generation_s": HOUR, "dead_letter_retention_ms": HOUR * 1000})
    now = 100 * HOUR + 10
    base = s.topics.dead_letter
    admin = KafkaAdminClient(bootstrap_servers=s.kafka_bootstrap)
    try:
        old, kept = f"{base}.g98", f"{base}.g99"  # g98 closed 2 h ago (expired), g99 1 h ago (not yet)
        first = dlt.maintain(s, admin, set(admin.list_topics()), now_s=now)
        assert first["created"] == [f"{base}.g100", f"{base}.g101"] and first["deleted"] == []
        create_missing(admin, {old: {}, kept: {}}, 1, set(admin.list_topics()))
        second = dlt.maintain(s, admin, set(admin.list_topics()), now_s=now)
        assert second == {"created": [], "deleted": [old]}
        left = set(dlt.topics(s, admin.list_topics()))
        assert {kept, f"{base}.g100", f"{base}.g101"} <= left and old not in left
    finally:
        admin.close()
