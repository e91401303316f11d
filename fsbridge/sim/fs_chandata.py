"""The data FreeSWITCH puts on every channel event: state names, causes, the basic headers.

Kept apart from the channel's behaviour: this is the shape of the headers (and their order, as
switch_channel_event_set_basic_data writes them), not what the channel does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fsbridge.sim.fs_channel import SimChannel

__all__ = [
    "CALLSTATE_NUMBERS",
    "CODECS",
    "HANGUP_CAUSES",
    "STATE_NUMBERS",
    "VERBOSE_EVENTS",
    "basic_headers",
]

STATE_NUMBERS = {
    "CS_NEW": 0, "CS_INIT": 1, "CS_ROUTING": 2, "CS_SOFT_EXECUTE": 3, "CS_EXECUTE": 4,
    "CS_EXCHANGE_MEDIA": 5, "CS_PARK": 6, "CS_CONSUME_MEDIA": 7, "CS_HIBERNATE": 8, "CS_RESET": 9,
    "CS_HANGUP": 10, "CS_REPORTING": 11, "CS_DESTROY": 12,
}  # fmt: skip
CALLSTATE_NUMBERS = {"DOWN": 0, "DIALING": 1, "RINGING": 2, "EARLY": 3, "ACTIVE": 4, "HANGUP": 10}
HANGUP_CAUSES = {
    "UNSPECIFIED": 0, "UNALLOCATED_NUMBER": 1, "NORMAL_CLEARING": 16, "USER_BUSY": 17,
    "NO_USER_RESPONSE": 18, "NO_ANSWER": 19, "CALL_REJECTED": 21, "DESTINATION_OUT_OF_ORDER": 27,
    "NORMAL_UNSPECIFIED": 31, "NORMAL_TEMPORARY_FAILURE": 41, "ORIGINATOR_CANCEL": 487,
    "LOSE_RACE": 502, "MANAGER_REQUEST": 503, "SYSTEM_SHUTDOWN": 503,
}  # fmt: skip
# Events that carry every variable_* (switch_channel_event_set_extended_data).
VERBOSE_EVENTS = frozenset(
    "CHANNEL_CREATE CHANNEL_ORIGINATE CHANNEL_UUID CHANNEL_ANSWER CHANNEL_PARK CHANNEL_UNPARK "
    "CHANNEL_BRIDGE CHANNEL_UNBRIDGE CHANNEL_PROGRESS CHANNEL_PROGRESS_MEDIA CHANNEL_HANGUP "
    "CHANNEL_HANGUP_COMPLETE REQUEST_PARAMS CHANNEL_DATA CHANNEL_EXECUTE CHANNEL_EXECUTE_COMPLETE "
    "CHANNEL_DESTROY SESSION_HEARTBEAT API RECORD_START RECORD_STOP PLAYBACK_START PLAYBACK_STOP "
    "CALL_UPDATE MEDIA_BUG_START MEDIA_BUG_STOP CHANNEL_HOLD CHANNEL_UNHOLD TEXT CUSTOM".split()
)
CODECS = {8000: ("PCMU", "64000"), 16000: ("L16", "256000")}


def basic_headers(ch: SimChannel) -> list[tuple[str, str]]:
    """switch_channel_event_set_basic_data for ``ch``, in its order."""
    codec, bit_rate = CODECS.get(ch.rate, ("L16", str(ch.rate * 16)))
    t = ch.times
    h = [
        ("Channel-State", ch.state),
        ("Channel-Call-State", ch.call_state),
        ("Channel-State-Number", str(ch.state_number)),
        ("Channel-Name", ch.name),
        ("Unique-ID", ch.uuid),
        ("Call-Direction", "inbound"),
        ("Presence-Call-Direction", "inbound"),
        ("Channel-HIT-Dialplan", "true"),
        ("Channel-Call-UUID", ch.uuid),
        ("Answer-State", ch.answer_state),
    ]
    if ch.hangup_cause:
        h.append(("Hangup-Cause", ch.hangup_cause))
    for side in ("Read", "Write"):
        h += [
            (f"Channel-{side}-Codec-Name", codec),
            (f"Channel-{side}-Codec-Rate", str(ch.rate)),
            (f"Channel-{side}-Codec-Bit-Rate", bit_rate),
        ]
    h += [
        ("Caller-Direction", "inbound"),
        ("Caller-Logical-Direction", "inbound"),
        ("Caller-Username", ch.cid_number),
        ("Caller-Dialplan", ch.dialplan),
        ("Caller-Caller-ID-Name", ch.cid_name),
        ("Caller-Caller-ID-Number", ch.cid_number),
        ("Caller-Orig-Caller-ID-Name", ch.cid_name),
        ("Caller-Orig-Caller-ID-Number", ch.cid_number),
        ("Caller-Network-Addr", "127.0.0.1"),
        ("Caller-ANI", ch.cid_number),
        ("Caller-Destination-Number", ch.destination),
        ("Caller-Unique-ID", ch.uuid),
        ("Caller-Source", "mod_sofia"),
        ("Caller-Context", ch.context),
        ("Caller-Channel-Name", ch.name),
        ("Caller-Profile-Index", str(ch.profile_index)),
        ("Caller-Profile-Created-Time", str(t.get("profile_created", 0))),
        ("Caller-Channel-Created-Time", str(t.get("created", 0))),
        ("Caller-Channel-Answered-Time", str(t.get("answered", 0))),
        ("Caller-Channel-Progress-Time", "0"),
        ("Caller-Channel-Progress-Media-Time", "0"),
        ("Caller-Channel-Hangup-Time", str(t.get("hangup", 0))),
        ("Caller-Channel-Transfer-Time", str(t.get("transfer", 0))),
        ("Caller-Channel-Resurrect-Time", "0"),
        ("Caller-Channel-Bridged-Time", "0"),
        ("Caller-Channel-Last-Hold", "0"),
        ("Caller-Channel-Hold-Accum", "0"),
        ("Caller-Screen-Bit", "true"),
        ("Caller-Privacy-Hide-Name", "false"),
        ("Caller-Privacy-Hide-Number", "false"),
    ]
    return h
