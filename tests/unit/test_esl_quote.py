"""quote_arg against a port of FreeSWITCH's blank-delimited argument split.

The oracle below follows switch_utils.c (separate_string_blank_delim + cleanup_separated_string,
reference/esl-and-greenswitch.md §3 and mod-audio-fork.md §1.1): runs of spaces separate,
single quotes group and are stripped, backslash escapes are processed everywhere.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fsbridge.esl import quote_arg

_UNESCAPE = {"n": "\n", "r": "\r", "t": "\t", "s": " "}


def _cleanup(token: str) -> str:
    i = 0
    while i < len(token) and token[i] == " ":
        i += 1
    out: list[str] = []
    end: int | None = None
    inside = False
    while i < len(token):
        ch = token[i]
        nxt = token[i + 1] if i + 1 < len(token) else ""
        if ch == "\\" and nxt and (nxt in "'\"\\" or nxt in _UNESCAPE):
            out.append(_UNESCAPE.get(nxt, nxt))
            end = len(out)
            i += 2
            continue
        if ch == "'" and (inside or "'" in token[i + 1 :]):
            inside = not inside
            if inside:
                end = len(out)
        else:
            out.append(ch)
            if ch != " " or inside:
                end = len(out)
        i += 1
    return "".join(out[:end]) if end is not None else "".join(out)


def fs_split(line: str, arraylen: int = 64) -> list[str]:
    """switch_separate_string(line, ' ', argv, arraylen)."""
    starts: list[int] = []
    cuts: list[int] = []
    state, i, inside = "START", 0, False
    while i < len(line) and len(starts) < arraylen:
        ch = line[i]
        if state == "START":
            starts.append(i)
            state = "SKIP_INITIAL"
        elif state == "SKIP_INITIAL":
            if ch == " ":
                i += 1
            else:
                state = "FIND"
        elif state == "FIND":
            if ch == "\\":
                i += 1
            elif ch == "'":
                inside = not inside
            elif ch == " " and not inside:
                cuts.append(i)
                state = "SKIP_END"
            i += 1
        else:  # SKIP_END
            if ch == " ":
                i += 1
            else:
                state = "START"
    tokens = []
    for n, start in enumerate(starts):
        stop = cuts[n] if n < len(cuts) else len(line)
        tokens.append(_cleanup(line[start:stop]))
    return tokens


def test_oracle_matches_documented_examples() -> None:
    assert fs_split("uuid_broadcast  abc   /tmp/x.wav aleg") == [
        "uuid_broadcast",
        "abc",
        "/tmp/x.wav",
        "aleg",
    ]
    assert fs_split("a 'b c' d") == ["a", "b c", "d"]
    assert fs_split(r"a b\'c \\x") == ["a", "b'c", "\\x"]


@pytest.mark.parametrize(
    ("value", "quoted"),
    [
        ("plain", "plain"),
        ("/tmp/chunk-1.wav", "/tmp/chunk-1.wav"),
        ("two words", "'two words'"),
        ("", "''"),
        ("it's", "it\\'s"),
        ("back\\slash", "back\\\\slash"),
        ("line\nbreak", "line\\nbreak"),
        ("^^:a:b", "'^^:a:b'"),
        ('{"a": "b"}', '\'{"a": "b"}\''),
    ],
)
def test_quote_arg_examples(value: str, quoted: str) -> None:
    assert quote_arg(value) == quoted
    assert fs_split(f"cmd {quoted} tail") == ["cmd", value, "tail"]


def test_quote_arg_never_emits_a_newline() -> None:
    assert "\n" not in quote_arg("a\nb\r\nc") and "\r" not in quote_arg("a\rb")


def test_quote_arg_rejects_nul() -> None:
    with pytest.raises(ValueError, match="NUL"):
        quote_arg("a\x00b")


_values = st.text(alphabet=st.characters(blacklist_characters="\x00"), max_size=30)


@given(st.lists(_values, min_size=1, max_size=6))
def test_quote_arg_round_trips_through_freeswitch_split(values: list[str]) -> None:
    line = " ".join(["uuid_setvar", *(quote_arg(v) for v in values)])
    assert "\n" not in line
    assert fs_split(line) == ["uuid_setvar", *values]
