"""Cypher hygiene: parameters only, and labels / relationship types / keys exactly those of the schema."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import numpy as np
import pytest

import graphstore
from graphstore import codec, cypher
from graphstore.base import UnknownQuery, check_query
from graphstore.schema import KEYS, Label, Rel

SRC = Path(graphstore.__file__).parent
DB_CALLS = {"query", "ro_query", "run", "execute_query", "_write", "_read", "_write_batched", "check_query"}


def _dynamic(node: ast.AST) -> str | None:
    """Why an expression used as query text is built at run time, or None if it is a plain name/constant."""
    if isinstance(node, ast.JoinedStr):
        return "f-string"
    if isinstance(node, ast.BinOp):
        return "string operator (+ or %)"
    if isinstance(node, ast.Call):
        f = node.func
        if isinstance(f, ast.Name) and f.id == "check_query" and node.args:  # the runtime guard passes it through
            return _dynamic(node.args[0])
        if isinstance(f, ast.Attribute) and f.attr in {"format", "format_map", "join", "replace"}:
            return f".{f.attr}()"
        return "a call result"
    return None


def test_no_query_text_is_built_from_values_in_graphstore_source():
    problems = []
    for path in sorted(SRC.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call):
                name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
                if name in DB_CALLS and node.args:
                    why = _dynamic(node.args[0])
                    if why:
                        problems.append(f"{path.name}:{node.lineno} {name}() gets query text from {why}")
    assert not problems, "Cypher must be a graphstore.cypher constant with $parameters:\n" + "\n".join(problems)


def test_f_strings_in_cypher_module_only_interpolate_schema_names():
    tree = ast.parse((SRC / "cypher.py").read_text())
    allowed = {"label", "prop", "rel", "label.lower()"}
    for node in ast.walk(tree):
        if isinstance(node, ast.FormattedValue):
            assert ast.unparse(node.value) in allowed, ast.unparse(node.value)


def test_runtime_guard_refuses_unknown_query_text(store):
    with pytest.raises(UnknownQuery):
        check_query("MATCH (n {name: 'x'}) RETURN n")
    with pytest.raises(UnknownQuery):
        store._read(cypher.COUNT[Label.USER] + " ", {})
    assert check_query(cypher.USER_TURNS) is cypher.USER_TURNS


def test_cypher_uses_exactly_the_schema_names():
    labels = set(vars(Label)[k] for k in vars(Label) if not k.startswith("_"))
    rels = set(vars(Rel)[k] for k in vars(Rel) if not k.startswith("_"))
    used_labels, used_rels = set(), set()
    for q in cypher.ALL:
        used_labels |= set(re.findall(r"\(\w*:(\w+)", q))
        used_rels |= set(re.findall(r"\[\w*:(\w+)\]", q))
        for label, key in re.findall(r"\(\w*:(\w+) \{(\w+):", q):
            assert KEYS[label] == key or (label, key) in cypher.SECONDARY_INDEXES, (label, key, q)
    assert used_labels == labels
    assert used_rels == rels


def test_codec_round_trip():
    v = np.random.default_rng(0).normal(size=384).astype(np.float32)
    np.testing.assert_array_equal(codec.decode(codec.encode(v)), v)
    assert codec.encode(None) is None and codec.decode(None) is None
    m = codec.stack([codec.encode(v), None, codec.encode(v * 2)])
    assert m.shape == (3, 384) and not m[1].any() and np.array_equal(m[2], v * 2)
    assert codec.stack([]).shape == (0, 0)


def test_open_store_picks_the_backend_without_connecting_at_import():
    import sys

    assert "neo4j" not in {m.split(".")[0] for m in sys.modules if m.startswith("graphstore")}
    assert callable(graphstore.open_store)
