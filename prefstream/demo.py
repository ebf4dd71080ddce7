"""`prefstream demo`: bring the local stack up and push real events through it end to end."""

from __future__ import annotations

import argparse
import time

from prefstream.stack_cli import add_stack_options, settings_from


def cmd_demo(args: argparse.Namespace) -> int:
    from kafka import KafkaConsumer, KafkaProducer

    from prefstream.stack import Stack
    from streams.events import ChatTurn, Feedback, LLMRegistered, Thumbs, parse_any
    from streams.kafka_config import consumer_kwargs, producer_kwargs

    stack = Stack(settings_from(args))
    s = stack.s
    t0 = time.monotonic()
    stack.up(apps=False)
    try:
        events = [LLMRegistered(llm_id="demo-llm", description="a demo model", price_in=0.1, price_out=0.1)]
        for i in range(args.events):
            events.append(ChatTurn(event_id=f"demo-t{i}", user_id="demo-user", conversation_id="demo-c",
                                   turn_index=i, timestamp=int(time.time() * 1000), query=f"question {i}",
                                   llm_id="demo-llm", response=f"answer {i}"))
            events.append(Feedback(event_id=f"demo-f{i}", user_id="demo-user", turn_id=f"demo-t{i}",
                                   timestamp=int(time.time() * 1000), signal=Thumbs(up=i % 2 == 0)))
        producer = KafkaProducer(**producer_kwargs(s))
        topic = {"llm_registered": s.topics.catalog, "chat_turn": s.topics.turns, "feedback": s.topics.feedback}
        for e in events:
            producer.send(topic[e.type], value=e.to_bytes())
        producer.flush()
        producer.close()
        consumer = KafkaConsumer(*topic.values(), **consumer_kwargs(s, group_id="prefstream-demo"))
        seen = 0
        deadline = time.monotonic() + 30
        while seen < len(events) and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=200).values():
                for r in records:
                    parse_any(r.value)
                    seen += 1
        consumer.close()
        print(f"published {len(events)} events, consumed and validated {seen} "
              f"in {time.monotonic() - t0:.1f} s (stack start included)")
        return 0 if seen == len(events) else 1
    finally:
        if not args.keep:
            stack.down()


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the end-to-end demo on a local stack",
                       description="Start the local stack, push events through it and stop it again.")
    add_stack_options(p)
    p.add_argument("--events", type=int, default=10, help="chat turns to publish (each with feedback)")
    p.add_argument("--keep", action="store_true", help="leave the stack running afterwards")
    p.set_defaults(func=cmd_demo, no_ray=False)
