"""Audit reads and the `prefstream audit` command."""

from __future__ import annotations

import argparse
import io
import json

import pytest

from graphstore import cli
from graphstore_events import decision, pairwise, thumbs, turn, with_emb


@pytest.fixture
def audited(store):
    store.upsert_turns(with_emb(turn("t0", idx=0, ts=1000, llm="m1", query='What is "2+2"? ü'),
                                turn("t0b", idx=0, ts=1001, llm="m2", query='What is "2+2"? ü'),
                                turn("t1", idx=1, ts=2000, llm="m1", query="and MATCH (n) RETURN n")))
    store.upsert_feedback([thumbs("f1", "t0", True, 1500), pairwise("f2", "t0b", "t0", 1600, "m2", "m1")])
    store.record_decisions([decision("r1", turns=["t0", "t0b"], ts=1900, scores={"m1": 0.9, "m2": 0.1}),
                            decision("r-other", user="u2", ts=1950)])
    return store


def test_user_history_has_turns_feedback_and_decisions(audited):
    hist = audited.user_history("u1", 10)
    assert [h.get("turn_id") or h.get("request_id") for h in hist] == ["t1", "r1", "t0b", "t0"]
    t0 = hist[-1]
    assert t0["query"] == 'What is "2+2"? ü' and t0["llm_id"] == "m1" and t0["rating"] == 0.0
    assert [(f["feedback_id"], f["rating"], f["rejected"]) for f in t0["feedback"]] == [("f1", 1.0, False),
                                                                                      ("f2", 0.0, True)]
    assert hist[1]["kind"] == "decision" and hist[1]["chosen_llm_id"] == "m1" and hist[1]["turn_ids"] == ["t0", "t0b"]
    assert [h.get("turn_id") or h.get("request_id") for h in audited.user_history("u1", 2)] == ["t1", "r1"]
    assert audited.user_history("ghost", 10) == []


def test_audit_json_and_table(audited):
    out = io.StringIO()
    assert cli.audit(audited, "u1", 10, as_json=True, out=out) == 0
    assert [h["kind"] for h in json.loads(out.getvalue())] == ["turn", "decision", "turn", "turn"]
    out = io.StringIO()
    assert cli.audit(audited, "u1", 10, out=out) == 0
    text = out.getvalue()
    assert "history of u1" in text and 'What is "2+2"? ü' in text and "r1" in text and "pairwise (rejected)" in text
    # the record: the pairwise feedback made t0b (m2) beat t0 (m1), overriding t0's thumbs up
    record = [r.replace("│", " ").split() for r in text[text.index("pairwise record of u1"):].splitlines()]
    assert [r for r in record if r[:1] in (["m1"], ["m2"])] == [["m1", "0", "1", "0.00"], ["m2", "1", "1", "1.00"]]
    out = io.StringIO()
    assert cli.audit(audited, "u1", request_id="r1", out=out) == 0
    assert "chose m1" in out.getvalue() and "t0b" in out.getvalue() and "m1 0.900" in out.getvalue()
    out = io.StringIO()
    assert cli.audit(audited, "u1", request_id="r1", as_json=True, out=out) == 0
    assert [t["turn_id"] for t in json.loads(out.getvalue())["turns"]] == ["t0", "t0b"]
    assert cli.audit(audited, "u1", request_id="r-other", out=io.StringIO()) == 1  # another user's decision
    assert cli.audit(audited, "ghost", out=io.StringIO()) == 1


def test_audit_subcommand_talks_to_the_configured_store(audited, store_settings, monkeypatch, capsys):
    import prefstream.options as stack_cli

    monkeypatch.setattr(stack_cli, "settings_from", lambda args: store_settings)
    parser = argparse.ArgumentParser(prog="prefstream")
    cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["audit", "u1", "--json", "--limit", "3"])
    assert args.func(args) == 0
    assert len(json.loads(capsys.readouterr().out)) == 3
    args = parser.parse_args(["audit", "u1", "--decision", "r1"])
    assert args.func(args) == 0 and "turns it used" in capsys.readouterr().out
