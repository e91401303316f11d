"""The example profile in docs/conversation.md is a valid config (docs change with the code)."""

import re
from pathlib import Path

import yaml

from fsbridge.config import parse_config

ROOT = Path(__file__).resolve().parents[2]


def test_worked_example_profile_validates() -> None:
    doc = (ROOT / "docs" / "conversation.md").read_text()
    block = re.search(r"<!-- example-profile -->\n```yaml\n(.*?)```", doc, re.S)
    assert block, "the example profile block is missing"
    cfg = parse_config(yaml.safe_load(block.group(1)), base_dir=ROOT, env={})
    prof = cfg.profiles["bookings"]
    assert prof.turn_detection.type == "semantic_vad"
    assert [t.name for t in prof.tools] == ["find_booking"]
    assert Path(prof.greeting).exists()
