"""Typed protocols: every task file validates, and a bad key, type or value stops a run before any extraction."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tips_bench.cli import main
from tips_bench.errors import TipsBenchError
from tips_bench.protocol import PROTOCOLS, validate_protocol
from tips_bench.tasks.base import TASK_TYPES, all_task_definitions, get_task_definition, make_task

REPO = Path(__file__).resolve().parents[1]


def test_every_task_file_validates_and_every_key_is_known():
    definitions = all_task_definitions()
    assert len(definitions) >= 30
    for d in definitions:
        assert d.type in PROTOCOLS and d.type in TASK_TYPES
        raw = yaml.safe_load(Path(d.path).read_text())["protocol"]
        schema_keys = set(PROTOCOLS[d.type].model_fields) | {"global"}
        assert set(raw) <= schema_keys, (d.name, set(raw) - schema_keys)  # no record-only keys are left
        make_task(d)  # the frame fits the task type


@pytest.mark.parametrize(("protocol", "words"), [
    ({"probe": {"epochs": "abc"}}, ["probe.epochs", "'abc'", "int >= 1"]),
    ({"probe": {"epoch": 3}}, ["probe.epoch", "not a known key", "epochs"]),
    ({"probe": {"epochs": 0}}, ["probe.epochs", "greater than or equal to 1"]),
    ({"frame": {"resize": "stretch"}}, ["frame.resize", "'keep_aspect'"]),
    ({"frame": {"inference": "slide"}}, ["frame.stride is required"]),
    ({"head": {"kind": "mlp"}}, ["head.kind", "'dpt'"]),
    ({"depth_range": [5, 1]}, ["depth_range", "min < max"]),
    ({"resolution": -3}, ["resolution", "'native'"]),
    ({"mode": "fast"}, ["mode", "'faithful'"]),
])
def test_bad_protocol_values_name_the_key_and_what_is_accepted(protocol, words):
    with pytest.raises(TipsBenchError) as info:
        validate_protocol("t", "depth", protocol)
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message, (word, message)


def test_defaults_live_in_the_schema():
    d = get_task_definition("toy_knn")
    assert d.protocol["ks"] == [10, 20, 100, 200] and d.protocol["frame"]["resize"] == "square"
    assert d.spec.frame.interpolation == "bicubic"


@pytest.mark.parametrize("argv", [
    ["--set", "probe.epochs=abc"],
    ["--set", "probe.epoch=3"],
    ["--set", "nosuchkey=1"],
    ["--set", "frame.resize=stretch"],
    ["--set", "probe.lr=-1"],
])
def test_cli_set_errors_exit_2_with_one_line_before_any_work(argv, tmp_path, capsys):
    cache = tmp_path / "cache"
    code = main(["run", "--backbone", "pixels", "--task", "toy_seg", "--no-progress", "--cache-dir", str(cache),
                 "--results", str(tmp_path / "r.jsonl"), *argv])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("tips-bench: error: ") and "\n" not in err and "Traceback" not in err
    assert not cache.exists() and not (tmp_path / "r.jsonl").exists()  # nothing was extracted or written


def test_a_set_key_applies_to_the_tasks_that_have_it(tmp_path):
    code = main(["run", "--backbone", "pixels", "--task", "toy_seg,toy_knn", "--limit", "8", "--no-progress",
                 "--set", "probe.epochs=1", "--set", "resolution=28", "--cache-dir", str(tmp_path / "c"),
                 "--results", str(tmp_path / "r.jsonl"), "--format", "csv"])
    assert code == 0
    from tips_bench.results import ResultsStore

    rows = ResultsStore(tmp_path / "r.jsonl").rows()
    by_task = {r.task: r.protocol["overrides"] for r in rows}
    assert by_task["toy_seg"] == {"probe.epochs": 1, "resolution": 28}
    assert by_task["toy_knn"] == {"resolution": 28}


def test_validate_checks_every_definition_against_its_schema(tmp_path, monkeypatch, capsys):
    bad = tmp_path / "tasks"
    bad.mkdir()
    text = (REPO / "tasks" / "toy_seg.yaml").read_text().replace("name: toy_seg", "name: toy_seg_bad")
    (bad / "toy_seg_bad.yaml").write_text(text.replace("ignore_index: 255", "ignore_index: 255\n  colour: red"))
    monkeypatch.setenv("TIPS_BENCH_PATH", str(tmp_path))
    assert main(["validate"]) == 1
    out = capsys.readouterr().out
    assert "toy_seg_bad" in out and "'colour' is not a known key" in out and "1 problem(s)" in out


def test_frame_that_does_not_fit_the_task_type_is_refused():
    with pytest.raises(TipsBenchError, match="does not fit a knn task"):
        make_task(get_task_definition("toy_knn").with_overrides({"frame.inference": "slide", "frame.stride": 100}))
