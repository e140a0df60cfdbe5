"""Shared fixtures: paths to the official-format TIPS fixtures shipped in tests/fixtures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
TIPS_DIR = FIXTURES / "tips"


@pytest.fixture(scope="session")
def tips_files() -> dict[str, Path]:
    return {
        "vision": TIPS_DIR / "tips_fixture_mlp_vision.npz",
        "text": TIPS_DIR / "tips_fixture_mlp_text.npz",
        "tokenizer": TIPS_DIR / "tips_fixture_mlp_tokenizer.model",
        "vision_ref": TIPS_DIR / "tips_fixture_mlp_vision_reference.npz",
        "text_ref": TIPS_DIR / "tips_fixture_mlp_text_reference.npz",
        "config": TIPS_DIR / "tips_fixture_mlp.json",
    }


@pytest.fixture(scope="session")
def tips_config(tips_files) -> dict:
    return json.loads(tips_files["config"].read_text())


@pytest.fixture(scope="session")
def tips_fixture_backbone(tips_files, tips_config):
    """The fixture checkpoint loaded through the generic 'tips' definition (heads from the JSON)."""
    from tips_bench.backbones import load_backbone

    return load_backbone("tips", checkpoint=tips_files["vision"], num_heads=tips_config["vision"]["num_heads"],
                         text_num_heads=tips_config["text"]["num_heads"])
