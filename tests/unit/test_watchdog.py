"""The no-input watchdog, the farewell, and the sequencing of the bridge's response requests."""

from __future__ import annotations

from fsbridge.call.responses import TAG_KEY, ResponseQueue
from fsbridge.call.watchdog import Farewell, Watchdog
from fsbridge.config import WatchdogConfig
from tests.openai_schema import validate_client_event


def test_watchdog_prompts_then_says_goodbye() -> None:
    wd = Watchdog(WatchdogConfig(silence_s=5.0, max_prompts=2))
    assert wd.poll(0.0, idle=True) == (None, 5.0)
    assert wd.poll(3.0, idle=True) == (None, 2.0)
    assert wd.poll(5.0, idle=True) == ("prompt", None)
    assert wd.poll(6.0, idle=False) == (None, None)  # the prompt is being answered
    assert wd.poll(9.0, idle=True) == (None, 5.0)  # the silence counts from here
    assert wd.poll(14.0, idle=True) == ("prompt", None)
    assert wd.poll(15.0, idle=True) == (None, 5.0)
    assert wd.poll(20.0, idle=True) == ("goodbye", None)
    assert wd.poll(99.0, idle=True) == (None, None) and wd.finished


def test_speech_resets_the_count_and_activity_the_clock() -> None:
    wd = Watchdog(WatchdogConfig(silence_s=1.0, max_prompts=1))
    assert wd.poll(1.0, idle=True) == (None, 1.0)
    assert wd.poll(2.0, idle=True) == ("prompt", None)
    wd.caller_spoke()
    assert wd.poll(2.5, idle=True) == (None, 1.0)
    assert wd.poll(2.9, idle=False) == (None, None)  # playing: the clock stops
    assert wd.poll(3.0, idle=True) == (None, 1.0)
    assert wd.poll(4.0, idle=True) == ("prompt", None)  # a fresh count after the caller spoke


def test_server_idle_timeouts_count_as_prompts() -> None:
    wd = Watchdog(WatchdogConfig(silence_s=None, max_prompts=1))
    assert wd.poll(100.0, idle=True) == (None, None)  # silence_s None: only the server's timer
    assert wd.server_prompted() == "prompt"
    assert wd.server_prompted() == "goodbye"
    assert wd.server_prompted() == "goodbye"


def test_zero_prompts_means_goodbye_at_the_first_silence() -> None:
    wd = Watchdog(WatchdogConfig(silence_s=2.0, max_prompts=0))
    wd.poll(0.0, idle=True)
    assert wd.poll(2.0, idle=True) == ("goodbye", None)


def test_farewell_waits_for_its_reply_to_be_heard() -> None:
    fw = Farewell()
    assert not fw.due(playing=False)
    fw.arm("no_input", "goodbye")
    fw.arm("max_turns", None)  # the first reason wins
    fw.created("resp_vad", None)  # a VAD reply is not the goodbye
    fw.created("resp_bye", "goodbye")
    fw.response_done("resp_vad", True)
    assert not fw.due(playing=False)
    fw.response_done("resp_bye", True)
    assert not fw.due(playing=True)  # still being heard
    assert fw.due(playing=False) and fw.reason == "no_input"


def test_farewell_without_audio_and_for_the_next_reply() -> None:
    fw = Farewell()
    fw.arm("end_call")
    fw.created("resp_1", "tool")
    fw.response_done("resp_1", had_audio=False)
    assert fw.due(playing=True)  # nothing of it to hear: at once
    lost = Farewell()
    lost.arm("end_call", "tool")
    lost.created("resp_2", "tool")
    lost.abandon_response()
    lost.created("resp_3", None)
    lost.response_done("resp_3", True)
    assert lost.due(playing=False)


def test_requests_wait_for_the_active_response() -> None:
    q = ResponseQueue()
    first = q.request("Greet.", "greeting", 0.0)
    assert first is not None
    validate_client_event(first)
    assert first["response"] == {"instructions": "Greet.", "metadata": {TAG_KEY: "greeting"}}
    assert q.request(None, "dtmf", 0.1) is None  # the greeting is in flight
    assert q.request(None, "dtmf", 0.2) is None  # the same request again: one response
    assert q.created("resp_g", {TAG_KEY: "greeting"}) == "greeting"
    nxt = q.done("resp_g", 1.0)
    assert nxt is not None and nxt["response"]["metadata"] == {TAG_KEY: "dtmf"}
    assert q.created("resp_d", nxt["response"]["metadata"]) == "dtmf"
    assert q.done("resp_d", 2.0) is None and not q.busy


def test_vad_responses_and_refusals() -> None:
    q = ResponseQueue()
    assert q.created("resp_vad", None) is None  # the server started one on its own
    assert q.request("Prompt.", "prompt", 0.0) is None
    sent = q.done("resp_vad", 1.0)
    assert sent is not None
    # a race: VAD started another before ours arrived, so ours was refused
    q.created("resp_vad2", None)
    again = q.error("conversation_already_has_active_response", None, 1.1)
    assert again is None and q.waiting and q.retried == 1
    retry = q.done("resp_vad2", 2.0)
    assert retry is not None and retry["response"]["instructions"] == "Prompt."
    assert retry["event_id"] != sent["event_id"]
    # refused for good (named by event_id): dropped, not retried
    assert q.error("invalid_value", retry["event_id"], 2.1) is None and not q.busy


def test_stale_requests_and_session_reset() -> None:
    q = ResponseQueue()
    assert q.request(None, "say", 0.0) is not None
    assert q.expire(5.0) is None and q.waiting  # not stale yet
    assert q.expire(20.0) is None and not q.busy  # the server never answered: given up
    q.request(None, "say", 21.0)
    q.created("resp_x", {TAG_KEY: "other"})  # not ours: ours is still in flight
    resent = q.reset(22.0)  # a new session: ask again there
    assert resent is not None and q.active is None
