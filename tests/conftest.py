"""Shared fixtures: paths to the official-format TIPS fixtures shipped in tests/fixtures."""

from __future__ import annotations

import json
from pathlib import Path

import paper_fixtures
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


# -- the paper tasks' fixtures (module scope: each test module gets its own folder and environment) --

@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """A module folder holding the test-only backbone definition; $TIPS_BENCH_PATH points at it meanwhile."""
    base = tmp_path_factory.mktemp("paper_tasks")
    (base / "defs" / "backbones").mkdir(parents=True)
    (base / "defs" / "backbones" / "tiny_tips.yaml").write_text(paper_fixtures.TINY_TIPS)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TIPS_BENCH_PATH", str(base / "defs"))
        mp.setenv("TIPS_BENCH_CACHE", str(base / "cache"))
        mp.setenv("TIPS_BENCH_RESULTS", str(base / "default_runs.jsonl"))
        yield base


@pytest.fixture(scope="module")
def roots(work) -> dict[str, Path]:
    """Every dataset the paper tasks read, written once in its official layout."""
    from fixture_writers.ade20k import write_ade20k
    from fixture_writers.captions import write_coco_karpathy, write_docci, write_flickr30k_karpathy
    from fixture_writers.imagenet import write_imagenet
    from fixture_writers.navi import write_navi
    from fixture_writers.nyu import write_nyu_depth, write_nyu_normals
    from fixture_writers.pascal_context import write_pascal_context
    from fixture_writers.spair import write_spair
    from fixture_writers.uned import write_uned
    from fixture_writers.voc import write_voc

    d = work / "data"
    return {
        "voc": write_voc(d / "voc"),  # with the SBD "aug" labels: voc_seg trains on trainaug
        "ade20k": write_ade20k(d / "ade20k"),
        "pascal_context": write_pascal_context(d / "pascal_context"),
        "nyu_depth": write_nyu_depth(d / "nyu_depth", layout="bts"),  # nyu_depth pins the BTS layout
        "nyu_normals": write_nyu_normals(d / "nyu_normals"),
        "navi": write_navi(d / "navi"),
        "spair": write_spair(d / "spair"),
        "imagenet": write_imagenet(d / "imagenet"),
        "uned": write_uned(d / "uned"),
        "coco": write_coco_karpathy(d / "coco"),
        "flickr": write_flickr30k_karpathy(d / "flickr"),
        "docci": write_docci(d / "docci"),
    }
