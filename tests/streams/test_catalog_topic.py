"""The catalog topic rebuilds the LLM catalog when the graph is unreachable (real broker)."""

from __future__ import annotations

import pytest

from fake_encoder import FakeEncoder

pytestmark = pytest.mark.integration


def test_catalog_from_topic_reads_the_latest_registration_of_each_llm(settings, topics):
    from streams.client import PrefstreamClient
    from workers.catalog import catalog_from_topic

    with PrefstreamClient(settings) as client:
        client.register_llm("small", "fast and cheap", 0.1, 0.2)
        client.register_llm("big", "slow and good", 1.0, 2.0)
        client.register_llm("small", "fast, cheap, now better", 0.1, 0.3)  # a re-registration wins
    cat = catalog_from_topic(settings, FakeEncoder(8))
    assert set(cat) == {"small", "big"}
    assert cat["small"].description == "fast, cheap, now better" and cat["small"].price_out == 0.3
    assert cat["big"].embedding.shape == (8,)
