"""The FreeSWITCH configuration and the greeting prompts shipped for operators.

These files are not imported by the service, so nothing else notices when one drifts from what the
controller expects (the channel variable it claims on, the ESL defaults, the audio format
FreeSWITCH plays). The tests read them the way FreeSWITCH and fsbridge would.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import yaml

from fsbridge.audio.wav import read_wav
from fsbridge.config import Config

ROOT = Path(__file__).resolve().parents[2]
FS_DIR = ROOT / "freeswitch"
GREETING_DIR = ROOT / "greeting"
ASSETS = ROOT / "fsbridge" / "assets"
SCRIPT = GREETING_DIR / "make-greeting.sh"

# greeting/ name -> package asset name
PROMPTS = {
    "greeting.wav": "greeting-tr-8k.wav",
    "apology.wav": "apology-tr-8k.wav",
    "greeting-en.wav": "greeting-en-8k.wav",
    "apology-en.wav": "apology-en-8k.wav",
}


def _xml_files() -> list[Path]:
    return sorted(FS_DIR.rglob("*.xml"))


def _params(root: ET.Element) -> dict[str, str]:
    return {p.get("name", ""): p.get("value", "") for p in root.iter("param")}


# ---------------------------------------------------------------------------------------------
# XML


def test_freeswitch_dir_has_the_expected_files() -> None:
    names = {p.relative_to(FS_DIR).as_posix() for p in _xml_files()}
    assert {
        "dialplan/fsbridge.xml",
        "autoload_configs/event_socket.conf.xml",
        "autoload_configs/acl.conf.xml",
        "autoload_configs/modules.conf.xml",
    } <= names
    assert (FS_DIR / "README.md").is_file()


@pytest.mark.parametrize("path", _xml_files(), ids=lambda p: p.relative_to(FS_DIR).as_posix())
def test_every_xml_file_parses(path: Path) -> None:
    ET.parse(path)


def _extensions() -> list[ET.Element]:
    root = ET.parse(FS_DIR / "dialplan" / "fsbridge.xml").getroot()
    assert root.tag == "include"
    return list(root.iter("extension"))


def test_dialplan_sets_profile_then_answers_then_parks() -> None:
    extensions = _extensions()
    assert len(extensions) >= 2
    for ext in extensions:
        actions = [(a.get("application"), a.get("data") or "") for a in ext.iter("action")]
        apps = [app for app, _ in actions]
        sets = [
            i
            for i, (app, data) in enumerate(actions)
            if app == "set" and data.startswith("fsbridge_profile=")
        ]
        assert len(sets) == 1, f"{ext.get('name')}: exactly one set fsbridge_profile=..."
        assert "answer" in apps and "park" in apps, ext.get("name")
        # fsbridge reads the variable from CHANNEL_PARK: it must be set before answer and park,
        # and park must be the last thing the extension does.
        assert sets[0] < apps.index("answer") < apps.index("park") == len(apps) - 1


def test_dialplan_profiles_exist_in_the_example_configs() -> None:
    named = set()
    for ext in _extensions():
        for a in ext.iter("action"):
            data = a.get("data") or ""
            if a.get("application") == "set" and data.startswith("fsbridge_profile="):
                named.add(data.split("=", 1)[1])
    assert named == {"default", "english"}
    for cfg in (ROOT / "deploy" / "fsbridge.yaml",):
        profiles = yaml.safe_load(cfg.read_text(encoding="utf-8"))["profiles"]
        assert named <= set(profiles), cfg


def test_dialplan_shows_per_call_overrides_only_as_comments() -> None:
    text = (FS_DIR / "dialplan" / "fsbridge.xml").read_text(encoding="utf-8")
    assert "fsbridge_instructions=" in text and "fsbridge_voice=" in text
    for ext in _extensions():
        for a in ext.iter("action"):
            data = a.get("data") or ""
            assert not data.startswith(("fsbridge_instructions=", "fsbridge_voice=")), (
                "overrides are examples, they must stay commented out"
            )


def test_event_socket_matches_config_defaults() -> None:
    params = _params(ET.parse(FS_DIR / "autoload_configs" / "event_socket.conf.xml").getroot())
    defaults = Config().freeswitch
    assert int(params["listen-port"]) == defaults.port == 8021
    assert params["password"] == defaults.password.get_secret_value()
    assert params["listen-ip"] == defaults.host == "127.0.0.1"


def test_event_socket_acl_exists_and_denies_by_default() -> None:
    params = _params(ET.parse(FS_DIR / "autoload_configs" / "event_socket.conf.xml").getroot())
    acl_name = params["apply-inbound-acl"]
    assert acl_name
    acl = ET.parse(FS_DIR / "autoload_configs" / "acl.conf.xml").getroot()
    lists = {lst.get("name"): lst for lst in acl.iter("list")}
    assert acl_name in lists
    lst = lists[acl_name]
    assert lst.get("default") == "deny"
    allowed = [n.get("cidr") for n in lst.iter("node") if n.get("type") == "allow"]
    assert allowed == ["127.0.0.1/32"], "only the fsbridge host, as single addresses"


def test_modules_load_audio_fork_and_keep_audio_stream_commented() -> None:
    root = ET.parse(FS_DIR / "autoload_configs" / "modules.conf.xml").getroot()
    loaded = {m.get("module") for m in root.iter("load")}
    assert {
        "mod_audio_fork",
        "mod_event_socket",
        "mod_commands",
        "mod_dptools",
        "mod_sndfile",
    } <= loaded
    assert "mod_audio_stream" not in loaded
    assert "mod_audio_stream" in (FS_DIR / "autoload_configs" / "modules.conf.xml").read_text()


# ---------------------------------------------------------------------------------------------
# Greeting prompts


def _prompt_paths() -> list[Path]:
    return [GREETING_DIR / n for n in PROMPTS] + [ASSETS / n for n in PROMPTS.values()]


@pytest.mark.parametrize("path", _prompt_paths(), ids=lambda p: p.name)
def test_prompt_is_8k_mono_16bit_and_1_to_10_s(path: Path) -> None:
    samples, rate = read_wav(path)  # raises unless mono 16-bit PCM
    assert rate == 8000
    duration = len(samples) / rate
    assert 1.0 <= duration <= 10.0, f"{path.name}: {duration:.2f} s"


@pytest.mark.parametrize("path", _prompt_paths(), ids=lambda p: p.name)
def test_prompt_is_normalised_and_trimmed(path: Path) -> None:
    samples, rate = read_wav(path)
    x = samples.astype(np.float64) / 32768.0
    peak_db = 20 * np.log10(np.max(np.abs(x)))
    assert -4.0 <= peak_db <= -2.0, f"peak {peak_db:.2f} dBFS, want about -3"
    loud = np.flatnonzero(np.abs(x) > 0.01)
    lead, tail = loud[0] / rate, (len(x) - 1 - loud[-1]) / rate
    assert lead < 0.25 and tail < 0.4, f"untrimmed silence: {lead:.2f} s lead, {tail:.2f} s tail"


@pytest.mark.parametrize(("src", "asset"), PROMPTS.items())
def test_package_copies_equal_the_greeting_dir(src: str, asset: str) -> None:
    assert (GREETING_DIR / src).read_bytes() == (ASSETS / asset).read_bytes()


def test_turkish_and_english_prompts_differ() -> None:
    assert (GREETING_DIR / "greeting.wav").read_bytes() != (
        GREETING_DIR / "greeting-en.wav"
    ).read_bytes()
    assert (GREETING_DIR / "greeting.wav").read_bytes() != (
        GREETING_DIR / "apology.wav"
    ).read_bytes()


# ---------------------------------------------------------------------------------------------
# make-greeting.sh


def test_script_is_executable_and_valid_sh() -> None:
    assert os.access(SCRIPT, os.X_OK)
    subprocess.run(["sh", "-n", str(SCRIPT)], check=True)
    out = subprocess.run([str(SCRIPT), "--help"], check=True, capture_output=True, text=True)
    assert "--tts" in out.stdout


def test_script_rejects_bad_arguments() -> None:
    bad = subprocess.run([str(SCRIPT), "--tts", "festival"], capture_output=True, text=True)
    assert bad.returncode != 0 and "espeak or openai" in bad.stderr
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    nokey = subprocess.run(
        [str(SCRIPT), "--tts", "openai"], capture_output=True, text=True, env=env
    )
    assert nokey.returncode != 0 and "OPENAI_API_KEY" in nokey.stderr


needs_sox = pytest.mark.skipif(shutil.which("sox") is None, reason="sox not installed")


@needs_sox
@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
def test_script_makes_a_custom_prompt_with_espeak(tmp_path: Path) -> None:
    out = tmp_path / "sub" / "welcome.wav"
    subprocess.run(
        [str(SCRIPT), "--lang", "tr", "--text", "Hoş geldiniz.", "--output", str(out)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    samples, rate = read_wav(out)
    assert rate == 8000 and len(samples) > rate // 2


class _FakeTts(BaseHTTPRequestHandler):
    """/v1/audio/speech stand-in: records requests, answers 1 s of 24 kHz pcm (a 440 Hz tone)."""

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append(  # type: ignore[attr-defined]
            {"path": self.path, "auth": self.headers.get("Authorization"), "body": body}
        )
        t = np.arange(24000) / 24000
        pcm = np.concatenate([np.zeros(2400), 0.3 * np.sin(2 * np.pi * 440 * t), np.zeros(2400)])
        data = (pcm * 32767).astype("<i2").tobytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def fake_tts() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeTts)
    server.requests = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@needs_sox
@pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")
def test_script_openai_path_makes_all_four(tmp_path: Path, fake_tts: ThreadingHTTPServer) -> None:
    key = "sk-test-not-a-real-key"
    env = dict(os.environ)
    env.update(OPENAI_API_KEY=key, OPENAI_BASE_URL=f"http://127.0.0.1:{fake_tts.server_port}/v1")
    proc = subprocess.run(
        [str(SCRIPT), "--tts", "openai", "--out", str(tmp_path), "--no-assets"],
        check=True,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert key not in proc.stdout + proc.stderr
    reqs = fake_tts.requests  # type: ignore[attr-defined]
    assert len(reqs) == 4
    for req in reqs:
        assert req["path"] == "/v1/audio/speech"
        assert req["auth"] == f"Bearer {key}"
        body = req["body"]
        assert isinstance(body, dict)
        assert body["response_format"] == "pcm" and body["voice"] == "marin"
    assert reqs[0]["body"]["input"].startswith("Merhaba")  # type: ignore[index]
    for name in PROMPTS:
        samples, rate = read_wav(tmp_path / name)
        # 1 s of tone, silence trimmed, 0.2 s of padding added back
        assert rate == 8000 and abs(len(samples) / rate - 1.2) < 0.05
