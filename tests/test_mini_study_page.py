"""benchmarks/mini_study.py's verdicts and cells: direction, significance and partially measured cells."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def study():
    spec = importlib.util.spec_from_file_location("_mini_study_for_tests", ROOT / "benchmarks" / "mini_study.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def test_a_clear_win_in_the_papers_direction_is_reproduced(study):
    assert study._verdict([36.0, 36.5, 37.0], [30.0, 30.5, 31.0], True, True) == ("better", "**reproduced**")
    # lower is better (rmse): a lower a is "better"
    assert study._verdict([1.0, 1.01, 1.02], [1.2, 1.21, 1.22], False, True) == ("better", "**reproduced**")


def test_the_opposite_direction_and_seed_noise_are_said_as_such(study):
    assert study._verdict([30.0, 30.5, 31.0], [36.0, 36.5, 37.0], True, True) == ("worse", "**opposite**")
    observed, verdict = study._verdict([31.0, 35.0, 39.0], [30.0, 34.0, 38.0], True, True)
    assert observed == "within seed noise" and verdict == "not reproduced (leans the paper's way)"
    observed, verdict = study._verdict([30.0, 34.0, 38.0], [31.0, 35.0, 39.0], True, True)
    assert verdict == "not reproduced (leans the other way)"
    assert study._verdict([36.0, 36.5, 37.0], [30.0, 30.5, 31.0], True, None) == ("better", "no claim")
    assert study._verdict([], [1.0], True, True) == ("—", "not measured")


def test_cells_show_mean_std_and_how_many_seeds_were_measured(study):
    assert study._fmt([30.0, 32.0, 34.0], expected=3) == "32.0 ± 2.0"
    assert study._fmt([1.1, 1.2], expected=3) == "1.150 ± 0.071 (n=2)"
    assert study._fmt([25.5]) == "25.5"
    assert study._fmt([]) == "—"


def test_a_task_on_which_every_backbone_lands_on_one_value_is_flagged(study):
    def row(backbone, task, value, ident="w"):
        return {"backbone": backbone, "task": task, "metric": "rmse", "value": value, "checkpoint_hash": ident}

    rows = [row("pixels", "flat", 33.0), row("tips_s14+random", "flat", 33.1), row("mini_a", "flat", 33.05),
            row("pixels", "varied", 1.1), row("tips_s14+random", "varied", 1.2), row("mini_a", "varied", 0.7)]
    heads = {"flat": ("rmse", False), "varied": ("rmse", False)}
    flat = study._flat_tasks(rows, heads, ["a"], {"mini_a": {"w"}})
    assert flat == ["flat"]
    assert "`flat`: every backbone" in study._flat_note(flat) and study._flat_note([]) == ""
