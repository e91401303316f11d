"""fork/protocol.py: glued-text splitter (fuzzed), Basic auth parsing, frame checks."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fsbridge.fork import (
    MAX_FRAME_BYTES,
    credentials_match,
    frame_error,
    parse_basic_auth,
    split_text_messages,
)


@pytest.mark.parametrize(
    ("text", "pieces"),
    [
        ('{"a":1}', ['{"a":1}']),
        ('{"a":1}{"b":2}', ['{"a":1}', '{"b":2}']),
        ('{"a":1} \n{"b":[1,{"c":"}"}]}', ['{"a":1}', '{"b":[1,{"c":"}"}]}']),
        ("[1,2][3]", ["[1,2]", "[3]"]),
        ('{"s":"a\\"}{"}{"t":"x"}', ['{"s":"a\\"}{"}', '{"t":"x"}']),
        ('{"s":"\\\\"}{"u":1}', ['{"s":"\\\\"}', '{"u":1}']),
        ("hello world", ["hello world"]),
        ('{"a":1}trailing', ['{"a":1}trailing']),
        ('{"a":1}{"b":', ['{"a":1}{"b":']),
        ('{"a":1]', ['{"a":1]']),
        ('{"a":"unterminated}', ['{"a":"unterminated}']),
        ("", []),
        ("  \n", []),
    ],
)
def test_split_examples(text: str, pieces: list[str]) -> None:
    assert split_text_messages(text) == pieces


# Strings full of the characters a naive splitter trips over.
_tricky = st.text(alphabet='ab"\\{}[]: é\n', max_size=8)
_leaf = st.one_of(st.none(), st.integers(), _tricky)
_json = st.one_of(_leaf, st.lists(_leaf, max_size=3), st.dictionaries(_tricky, _leaf, max_size=2))
_containers = st.one_of(st.dictionaries(_tricky, _json, max_size=3), st.lists(_json, max_size=3))


@settings(max_examples=100, deadline=None)
@given(
    st.lists(_containers, min_size=1, max_size=5),
    st.lists(st.sampled_from(["", " ", "\n", "\r\n", "\t"]), min_size=5, max_size=5),
    st.booleans(),
)
def test_glued_json_splits_back(objs: list[object], gaps: list[str], ascii_only: bool) -> None:
    dumped = [json.dumps(o, ensure_ascii=ascii_only, separators=(",", ":")) for o in objs]
    text = "".join(d + gaps[i] for i, d in enumerate(dumped))
    assert split_text_messages(text) == dumped
    assert [json.loads(p) for p in split_text_messages(text)] == objs


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet='{}[]"\\ ab:,', max_size=40))
def test_split_never_loses_text(text: str) -> None:
    pieces = split_text_messages(text)
    if not text.strip():
        assert pieces == []
    elif len(pieces) == 1 and pieces[0] == text:
        pass  # returned whole
    else:
        # Only whitespace between the pieces may disappear.
        rebuilt = "".join(pieces)
        assert "".join(text.split()) == "".join(rebuilt.split())
        assert all(p[0] in "{[" and p[-1] in "}]" for p in pieces)


def _basic(raw: bytes) -> str:
    return "Basic " + base64.b64encode(raw).decode()


def test_parse_basic_auth() -> None:
    assert parse_basic_auth(_basic(b"fork-u:p@ss:word")) == ("fork-u", "p@ss:word")
    assert parse_basic_auth("basic " + base64.b64encode(b"a:b").decode()) == ("a", "b")
    assert parse_basic_auth(_basic("ü:ş".encode())) == ("ü", "ş")
    for bad in (None, "", "Bearer abc", "Basic", "Basic !!!", _basic(b"nocolon"), "Basic YQ"):
        assert parse_basic_auth(bad) is None


def test_credentials_match() -> None:
    assert credentials_match(("u", "p"), ("u", "p"))
    assert not credentials_match(("u", "p"), ("u", "q"))
    assert not credentials_match(("u", "p"), ("v", "p"))
    assert not credentials_match(("u", "p"), None)


def test_frame_error() -> None:
    assert frame_error(320) is None
    assert frame_error(321) is None  # odd sizes are audio too
    assert frame_error(MAX_FRAME_BYTES) is None
    problem = frame_error(MAX_FRAME_BYTES + 1)
    assert problem is not None and str(MAX_FRAME_BYTES) in problem
    assert frame_error(100, max_bytes=64) is not None
