"""The standalone ``fsbridge sim realtime`` entry point and YAML scripts."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path

import aiohttp
import numpy as np
import pytest

from fsbridge.audio.wav import write_wav
from fsbridge.sim.rt_cli import cli_main
from fsbridge.sim.rt_script import FunctionCallReply, Reply, load_script

ASSET = Path(__file__).resolve().parents[2] / "fsbridge" / "assets" / "reply-en-short-24k.wav"


def test_load_script(tmp_path: Path) -> None:
    write_wav(tmp_path / "a.wav", np.zeros(2400, dtype=np.int16), 24000)
    (tmp_path / "turns.yaml").write_text(
        "turns:\n"
        "  - audio: a.wav\n"
        "    transcript: Hello.\n"
        "  - function_call: {name: transfer, arguments: {to: sales}}\n"
        "input_transcripts: [hi, bye]\n"
    )
    turns, transcripts = load_script(tmp_path / "turns.yaml")
    assert isinstance(turns[0], Reply) and turns[0].transcript == "Hello."
    assert turns[0].audio == tmp_path / "a.wav"
    assert isinstance(turns[1], FunctionCallReply) and turns[1].arguments_text() == '{"to":"sales"}'
    assert transcripts == ["hi", "bye"]


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("turns: []\n", "non-empty"),
        ("turns:\n  - audio: missing.wav\n", "missing.wav"),
        ("turns:\n  - speak: x\n", "unknown keys"),
        (": : :\n", "cannot read"),
    ],
)
def test_bad_scripts_are_clear_errors(tmp_path: Path, text: str, needle: str) -> None:
    (tmp_path / "t.yaml").write_text(text)
    with pytest.raises(ValueError, match=needle):
        load_script(tmp_path / "t.yaml")


def test_cli_bad_input_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["--port", "0", "--reply", str(tmp_path / "nope.wav")]) == 2
    assert "nope.wav" in capsys.readouterr().err
    assert cli_main(["--port", "0", "--api-key-env", "FSBRIDGE_TEST_UNSET_VAR"]) == 2


async def test_cli_serves_until_sigint() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "fsbridge.sim.rt_cli",
        "--port",
        "0",
        "--reply",
        str(ASSET),
        "--transcript",
        "We are open.",
        "--clock-speed",
        "20",
        "--delivery-speed",
        "50",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=str(ASSET.parents[2]),
    )
    try:
        line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
        assert line.startswith("listening on ws://127.0.0.1:"), line
        url = line.split()[-1]
        async with (
            aiohttp.ClientSession() as http,
            http.ws_connect(
                f"{url}?model=gpt-realtime", headers={"Authorization": "Bearer k"}
            ) as ws,
        ):
            assert (await ws.receive_json(timeout=5))["type"] == "session.created"
            await ws.send_str(json.dumps({"type": "response.create"}))
            while (ev := await ws.receive_json(timeout=5))[
                "type"
            ] != "response.output_audio_transcript.done":
                pass
            assert ev["transcript"] == "We are open."
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), 20) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
