"""Config: validated at start, errors name the key, secrets from the environment, docs current."""

from pathlib import Path

import pytest

from fsbridge.config import ConfigError, load_config, parse_config
from fsbridge.configdoc import render

ROOT = Path(__file__).resolve().parents[2]


def test_defaults_give_turkish_default_and_english_profiles() -> None:
    cfg = parse_config({}, env={})
    assert set(cfg.profiles) == {"default", "english"}
    assert cfg.profiles["default"].transcription.language == "tr"
    assert Path(cfg.profiles["default"].greeting).exists()


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({"freeswitch": {"fork_rate": 22050}}, "freeswitch.fork_rate"),
        ({"freeswitch": {"fork_rate": "8000"}}, "freeswitch.fork_rate"),
        ({"freeswitch": {"passwrd": "x"}}, "freeswitch.passwrd: unknown key"),
        ({"profiles": {"a": {"voice": "nova"}}}, "profiles.a.voice"),
        ({"profiles": {"a": {"turn_detection": {"type": "magic"}}}}, "profiles.a.turn_detection"),
        ({"listen": {"public_url": "ws://fsbridge/x"}}, "explicit port"),
        ({"listen": {"public_url": "http://h:80"}}, "ws://"),
        ({"profiles": {}}, "at least one profile"),
        ({"bogus": 1}, "bogus: unknown key"),
        ({"realtime": {"reconnect_attempts": 0}}, "realtime.reconnect_attempts"),
        ({"profiles": {"a": {"max_turns_goodbye_prompt": ""}}}, "profiles.a.max_turns_goodbye"),
    ],
)
def test_errors_name_the_key(data: dict, needle: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config(data, env={})
    assert needle in str(exc.value)


def test_secrets_from_environment_never_print() -> None:
    cfg = parse_config({}, env={"OPENAI_API_KEY": "sk-secret-1", "FSBRIDGE_ESL_PASSWORD": "pw-2"})
    assert cfg.realtime.api_key.get_secret_value() == "sk-secret-1"
    assert cfg.freeswitch.password.get_secret_value() == "pw-2"
    assert "sk-secret-1" not in repr(cfg) and "pw-2" not in repr(cfg)


def test_yaml_errors_and_relative_paths(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("listen: {host: [\n")
    with pytest.raises(ConfigError, match="not valid YAML at line"):
        load_config(bad, env={})
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "missing.yaml", env={})
    good = tmp_path / "ok.yaml"
    good.write_text("profiles:\n  p: {greeting: sounds/hi.wav}\n")
    cfg = load_config(good, env={})
    assert cfg.profiles["p"].greeting == str(tmp_path / "sounds" / "hi.wav")


def test_configuration_doc_is_generated_from_the_model() -> None:
    doc = (ROOT / "docs" / "configuration.md").read_text()
    assert doc == render(), "run: python -m fsbridge.configdoc > docs/configuration.md"


def test_serve_exits_2_naming_the_key(tmp_path: Path) -> None:
    from fsbridge.cli import main

    path = tmp_path / "c.yaml"
    path.write_text("freeswitch: {port: eighty}\n")
    assert main(["serve", "--config", str(path)]) == 2
