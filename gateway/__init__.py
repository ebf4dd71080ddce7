"""`prefstream gateway`: an OpenAI-compatible HTTP endpoint on top of the Kafka route path.

An app points its OpenAI client at the gateway and names the model ``prefstream/auto``: the gateway asks the
router (RouteRequest -> route.decisions, so every decision is made by the Ray workers and audited), forwards
the request to the chosen LLM's upstream (streaming passed through), publishes the finished ChatTurn, and takes
feedback on ``/v1/feedback``. Modules: ``chat`` (the OpenAI request and what prefstream reads from it),
``catalog`` (LLMs and their upstreams, from the ``llm.catalog`` topic), ``upstream`` (forwarding), ``routing``
(decisions over Kafka), ``feedback``, ``app`` (the HTTP handlers), ``cli``.
"""
