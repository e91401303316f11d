"""The played-audio ledger: what the caller heard of an item."""

from fsbridge.call.ledger import Chunk, PlayedLedger


def chunk(cid: str, offset: float, dur: float, item: str = "item_1") -> Chunk:
    return Chunk(cid, item, "resp_1", offset, dur, f"/tmp/{cid}.wav", queued_t=0.0)


def test_heard_after_done_and_broken_chunks_uses_offset_pos() -> None:
    led = PlayedLedger(8000)
    for c in (chunk("c1", 0, 200), chunk("c2", 200, 800), chunk("c3", 1000, 1000)):
        led.add(c)
    led.on_start("c1", 1.0)
    led.on_stop("c1", 1.2, "done", 1600)
    led.on_start("c2", 1.2)
    led.on_stop("c2", 1.5, "break", 2400)  # 300 ms of 800 written
    assert led.heard_ms("item_1") == 500
    led.drop_queued()
    assert led.get("c3").state == "dropped"
    assert led.pending_count() == 0


def test_playing_chunk_counts_by_clock_capped_at_length() -> None:
    led = PlayedLedger(8000)
    led.add(chunk("c1", 0, 400))
    led.on_start("c1", 10.0)
    assert led.heard_ms("item_1", now=10.25) == 250
    assert led.heard_ms("item_1", now=11.0) == 400


def test_never_started_chunk_counts_nothing() -> None:
    led = PlayedLedger(16000)
    led.add(chunk("c1", 0, 400))
    assert led.heard_ms("item_1", now=5.0) == 0
    assert not led.item_fully_played("item_1")


def test_break_without_offset_falls_back_to_clock() -> None:
    led = PlayedLedger(8000)
    led.add(chunk("c1", 0, 1000))
    led.on_start("c1", 2.0)
    led.on_stop("c1", 2.3, "break", None)
    assert abs(led.heard_ms("item_1") - 300) < 1e-6


def test_fully_played_and_prune() -> None:
    led = PlayedLedger(8000)
    led.add(chunk("c1", 0, 200))
    led.on_start("c1", 0.0)
    led.on_stop("c1", 0.2, "done", 1600)
    assert led.item_fully_played("item_1")
    led.add(chunk("c2", 0, 200, item="item_2"))
    led.prune("item_2")
    assert led.get("c1") is None and led.get("c2") is not None


def test_unknown_chunk_ids_are_ignored() -> None:
    led = PlayedLedger(8000)
    assert led.on_start("nope", 0.0) is None
    assert led.on_stop("nope", 0.0, "done", 0) is None


def test_prune_keeps_the_played_chunks_of_an_item_still_pending() -> None:
    led = PlayedLedger(8000)
    led.add(chunk("c1", 0, 400))
    led.add(chunk("c2", 400, 400))
    led.on_start("c1", 0.0)
    led.on_stop("c1", 0.4, "done", 3200)
    led.add(chunk("c3", 0, 200, item="item_2"))
    led.prune("item_2")  # item_1 still has c2 queued: its played c1 says how far we got
    assert led.get("c1") is not None
    assert led.heard_ms("item_1") == 400
    assert led.items() == {"item_1", "item_2"}


def test_a_dropped_chunk_that_starts_anyway_counts() -> None:
    """The lost-break case: FreeSWITCH plays a chunk the ledger had dropped."""
    led = PlayedLedger(8000)
    led.add(chunk("c1", 0, 400))
    led.add(chunk("c2", 400, 400))
    led.on_start("c1", 0.0)
    led.on_stop("c1", 0.4, "done", 3200)
    assert [c.id for c in led.drop_queued()] == ["c2"]
    led.on_start("c2", 0.45)
    assert led.pending_count() == 1
    led.on_stop("c2", 0.47, "break", 160)
    assert led.heard_ms("item_1") == 420
