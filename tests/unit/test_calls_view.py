"""``fsbridge calls``: joining FreeSWITCH's channels with the bridge's calls, and the table."""

from __future__ import annotations

import time

from fsbridge.calls_view import (
    CallsReport,
    Source,
    _merge,
    human_duration,
    human_tokens,
    render_table,
)

U1 = "4973801f-807a-4ad3-abd0-db6da1811e2f"
U2 = "0b1c2d3e-0000-4000-8000-000000000002"


def esl_row(uuid: str, age_s: float = 65) -> dict:
    return {"uuid": uuid, "cid_num": "5551234", "profile": "english", "callstate": "ACTIVE",
            "created_epoch": str(int(time.time() - age_s))}  # fmt: skip


def bridge_row(uuid: str) -> dict:
    return {"uuid": uuid, "caller": "5551234", "profile": "english", "state": "speaking",
            "duration_s": 64.2, "turns": 3, "first_audio_ms": 640.4, "bridge_ms": 35.0,
            "tokens": 2345, "cost_usd": 0.12, "trace": None, "barge_ins": 1}  # fmt: skip


def test_both_sources_joined_by_uuid() -> None:
    (row,) = _merge([esl_row(U1)], [bridge_row(U1)], True, True)
    assert row["seen_by"] == ["freeswitch", "bridge"]
    assert row["state"] == "speaking" and row["turns"] == 3 and row["freeswitch_state"] == "ACTIVE"
    assert row["duration_s"] == 64.2  # the bridge's own clock wins


def test_a_channel_the_bridge_does_not_know_is_unclaimed_unless_the_bridge_is_silent() -> None:
    (row,) = _merge([esl_row(U1)], [], True, True)
    assert row["state"] == "unclaimed" and row["turns"] is None and 60 <= row["duration_s"] <= 70
    (row,) = _merge([esl_row(U1)], [], True, False)
    assert row["state"] is None  # unknown, not "unclaimed"


def test_bridge_only_calls_are_listed_longest_first() -> None:
    rows = _merge([esl_row(U2, age_s=5)], [bridge_row(U1)], True, True)
    assert [r["uuid"] for r in rows] == [U1, U2]
    assert rows[0]["seen_by"] == ["bridge"]


def test_table_aligned_humanised_and_names_the_missing_source() -> None:
    report = CallsReport(
        _merge([esl_row(U2, age_s=3725)], [bridge_row(U1)], True, True),
        Source("esl", "127.0.0.1:8021", ok=False, error="Connection refused"),
        Source("admin", "http://127.0.0.1:8081", ok=True),
    )
    lines = render_table(report).splitlines()
    assert lines[0].split() == ["UUID", "CALLER", "PROFILE", "STATE", "DURATION", "TURNS", "1ST",
                                "AUDIO", "TOKENS"]  # fmt: skip
    # longest first
    assert lines[1].startswith(U2) and "1h02m" in lines[1] and "unclaimed" in lines[1]
    assert lines[2].startswith(U1) and "1m04s" in lines[2] and "640 ms" in lines[2]
    assert "2.3k" in lines[2] and "speaking" in lines[2]
    # columns line up: every row's DURATION ends where the header's does
    end = lines[0].index("DURATION") + len("DURATION")
    assert all(line[end - 1] != " " for line in lines[1:3])
    assert lines[3] == "2 calls · bridge admin API http://127.0.0.1:8081"
    assert lines[4].startswith("! FreeSWITCH (ESL) at 127.0.0.1:8021 did not answer")


def test_empty_table() -> None:
    report = CallsReport([], Source("esl", "e", ok=True), Source("admin", "a", ok=True))
    assert (
        render_table(report).splitlines()[1] == "0 calls · FreeSWITCH (ESL) e · bridge admin API a"
    )


def test_humanised_figures() -> None:
    assert [human_duration(x) for x in (None, 0, 59.9, 60, 3599, 3600, 7325)] == [
        "-", "0s", "59s", "1m00s", "59m59s", "1h00m", "2h02m"]  # fmt: skip
    assert [human_tokens(x) for x in (None, 0, 999, 1000, 23456, 3_400_000)] == [
        "-", "0", "999", "1.0k", "23.5k", "3.4M"]  # fmt: skip
