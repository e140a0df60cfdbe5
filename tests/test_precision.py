"""--precision: bf16 / fp16 autocast in extraction, bounded differences from fp32, part of the cache key and rows."""

from __future__ import annotations

import pytest
import torch

from tips_bench import precision as precision_module
from tips_bench.cache import FeatureCache
from tips_bench.errors import InputError
from tips_bench.precision import autocast, cpu_bf16_flags, resolve_precision
from tips_bench.results import ResultsStore
from tips_bench.runner import Runner, RunOptions


def test_defaults_and_bad_values():
    assert resolve_precision(None, "cpu") == "fp32" and resolve_precision(None, "cuda:1") == "bf16"
    with pytest.raises(InputError, match="fp32, bf16, fp16"):
        resolve_precision("int8", "cpu")


def test_cpu_bf16_flags_are_read_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16\n\nprocessor\t: 1\nflags\t: fpu avx2\n")
    assert cpu_bf16_flags.__wrapped__(str(info)) == ("avx512_bf16",)
    info.write_text("flags : fpu sse avx2 amx_tile amx_bf16\n")
    assert cpu_bf16_flags.__wrapped__(str(info)) == ("amx_bf16",)
    info.write_text("flags : fpu sse avx2\n")
    assert cpu_bf16_flags.__wrapped__(str(info)) == ()
    assert cpu_bf16_flags.__wrapped__(str(tmp_path / "missing")) is None


def test_emulated_bf16_on_cpu_gets_a_one_line_notice_once(monkeypatch, capsys):
    monkeypatch.setattr(precision_module, "cpu_bf16_flags", lambda: ())
    precision_module._notice_emulated.cache_clear()
    assert resolve_precision("bf16", "cpu") == "bf16" and resolve_precision("bf16", "cpu") == "bf16"
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no native bf16 instructions" in err and "--precision bf16" in err
    monkeypatch.setattr(precision_module, "cpu_bf16_flags", lambda: ("avx512_bf16",))
    precision_module._notice_emulated.cache_clear()
    assert resolve_precision("bf16", "cpu") == "bf16" and resolve_precision("fp32", "cpu") == "fp32"
    assert capsys.readouterr().err == ""


def test_bf16_features_of_the_tips_fixture_stay_close_to_fp32(tips_fixture_backbone):
    backbone = tips_fixture_backbone
    x = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    last = backbone.num_layers - 1
    ref = backbone.encode_image(x, layers=[last])
    with autocast("bf16", "cpu"):
        low = backbone.encode_image(x, layers=[last])
    scale = ref.patches[last].abs().max()
    assert (low.patches[last].float() - ref.patches[last]).abs().max() / scale < 0.03  # bf16: 8 mantissa bits
    for name in ref.globals:
        assert (low.globals[name].float() - ref.globals[name]).abs().max() / ref.globals[name].abs().max() < 0.03


def test_precision_keys_the_cache_and_is_recorded_and_scores_stay_close(tmp_path):
    runner = Runner(store=ResultsStore(tmp_path / "runs.jsonl"), cache=FeatureCache(tmp_path / "cache"))
    base = {"limit": 16, "progress": False, "random_init": True, "overrides": {"resolution": 56}}
    fp32 = runner.run("tips_s14", "toy_seg", RunOptions(**base, precision="fp32"))
    bf16 = runner.run("tips_s14", "toy_seg", RunOptions(**base, precision="bf16"))
    assert runner.last_forward_items == 32  # a new cache entry: bf16 features are never mixed with fp32 ones
    assert fp32[0].protocol["precision"] == "fp32" and bf16[0].protocol["precision"] == "bf16"
    assert fp32[0].config_hash != bf16[0].config_hash
    assert abs(fp32[0].value - bf16[0].value) < 3.0  # mIoU points
