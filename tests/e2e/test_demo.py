"""`fsbridge demo` — the README's first command — works with no FreeSWITCH and no API key."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fsbridge.audio.wav import read_wav

pytestmark = pytest.mark.slow


def test_demo_writes_heard_wav_and_report(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "fsbridge.cli",
            "demo",
            "--profile",
            "english",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "greeting heard: yes" in proc.stdout and "reply 1: first audio" in proc.stdout
    heard, rate = read_wav(tmp_path / "heard.wav")
    assert rate == 8000 and np.abs(heard).max() > 1000
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["turns"] == 1 and report["replies"][0]["files"] >= 1
    assert report["replies"][0]["first_audio_ms"] < 400
