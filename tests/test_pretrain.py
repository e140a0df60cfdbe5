"""tips-bench pretrain: recipes, determinism, official-layout export, CLI errors, shipped mini backbones."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tips_bench.backbones import load_backbone
from tips_bench.backbones.checkpoints import CheckpointFiles, bundled_dir
from tips_bench.backbones.spec import get_backbone_spec
from tips_bench.backbones.tips_text import MAX_LEN
from tips_bench.cli import main
from tips_bench.errors import TipsBenchError
from tips_bench.pretrain import RECIPES, get_recipe
from tips_bench.pretrain.export import compare_folders, sha256, vision_arrays, write_npz
from tips_bench.pretrain.models import ImageTower, TowerSizes
from tips_bench.pretrain.tokenizer import load_processor, train_tokenizer
from tips_bench.pretrain.trainer import PretrainConfig, pretrain
from tips_bench.pretrain.world import PRETRAIN_SPLIT, TOKENIZER_SPLIT, WorldStream, caption_corpus
from tips_bench.tasks.base import all_task_definitions

TINY = TowerSizes(image_size=28, width=32, depth=1, heads=1, text_depth=1, text_heads=1)
TINY_ARGS = ["--steps", "2", "--batch-size", "4", "--image-size", "28", "--width", "32", "--depth", "1",
             "--text-depth", "1", "--local-size", "14", "--tokenizer-scenes", "60", "--vocab-size", "128",
             "--no-progress"]
MINI = ("mini_clip_noisy", "mini_clip_synthetic", "mini_tips_dual", "mini_tips_full", "mini_cap_mim")


def tiny(recipe: str, seed: int = 0, **kw) -> PretrainConfig:
    return PretrainConfig(recipe=recipe, seed=seed, batch_size=4, sizes=TINY, local_size=14, tokenizer_scenes=60,
                          vocab_size=128, **{"steps": 2, **kw})


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.name != "recipe.json"}


def test_registry_holds_the_five_recipes():
    assert list(RECIPES) == ["clip_noisy", "clip_synthetic", "tips_dual", "tips_full", "cap_mim"]
    assert get_recipe("tips_dual").contrast == ((0, "short"), (1, "long"))
    assert get_recipe("tips_full").self_distillation and not get_recipe("tips_dual").self_distillation
    assert get_recipe("cap_mim").caption and not get_recipe("cap_mim").has_text_tower()
    with pytest.raises(TipsBenchError, match="unknown recipe 'clip'"):
        get_recipe("clip")


def test_pretraining_splits_are_used_by_no_task():
    used = {s.split for d in all_task_definitions() for s in d.splits.values()}
    assert PRETRAIN_SPLIT not in used and TOKENIZER_SPLIT not in used


def test_world_stream_batches_are_pure_functions_of_the_index():
    stream = WorldStream(28, 3, seed=0)
    a, b = stream[5], stream[5]
    assert a.images.shape == (3, 3, 28, 28) and 0.0 <= float(a.images.min()) <= float(a.images.max()) <= 1.0
    assert torch.equal(a.images, b.images) and a.short == b.short and a.long == b.long
    assert a.long != stream[6].long
    assert all(" of " in text or "," in text or "floor" in text for text in a.long)  # spatial descriptions


def test_tokenizer_is_deterministic_with_tips_conventions():
    lines = caption_corpus(0, 600)
    model = train_tokenizer(lines, 256)
    assert model == train_tokenizer(lines, 256)
    sp = load_processor(model)
    assert (sp.pad_id(), sp.unk_id(), sp.bos_id(), sp.eos_id()) == (0, 1, -1, -1)
    assert max(len(sp.encode(t.lower())) for t in lines) <= MAX_LEN
    assert sp.encode("a red cube", out_type=str) == ["▁a", "▁red", "▁cube"]


def test_npz_bytes_depend_only_on_the_arrays(tmp_path):
    arrays = {"b": np.arange(6, dtype=np.float32).reshape(2, 3), "temperature": np.asarray(0.5, np.float32)}
    write_npz(tmp_path / "x.npz", arrays)
    time.sleep(1.1)  # np.savez would stamp a new time
    write_npz(tmp_path / "y.npz", arrays)
    assert (tmp_path / "x.npz").read_bytes() == (tmp_path / "y.npz").read_bytes()
    with np.load(tmp_path / "x.npz") as data:
        assert data.files == ["b", "temperature"] and float(data["temperature"]) == 0.5


def test_exported_vision_tower_loads_with_the_same_outputs(tmp_path):
    """Official layout (class position as zeros, register_tokens, mask_token) -> timm through the tips loader."""
    torch.manual_seed(3)
    sizes = TowerSizes(image_size=56, width=64, depth=2, heads=1, text_heads=1)
    tower = ImageTower(sizes).eval()
    with torch.no_grad():
        for p in tower.parameters():
            p.add_(0.1 * torch.randn_like(p))  # cls/register tokens start near zero: make them count
    arrays = vision_arrays(tower)
    assert list(arrays)[:4] == ["cls_token", "pos_embed", "register_tokens", "mask_token"]
    assert arrays["pos_embed"].shape == (1, 1 + 16, 64)
    write_npz(tmp_path / "m_vision.npz", arrays)
    backbone = load_backbone("tips", checkpoint=tmp_path / "m_vision.npz")
    x = torch.rand(2, 3, 56, 56)
    with torch.no_grad():
        tokens = tower(x)
    feats = backbone.encode_image(x, layers=[1])
    torch.testing.assert_close(feats.globals["cls1"], tokens[:, 0], atol=1e-5, rtol=0)
    torch.testing.assert_close(feats.globals["cls2"], tokens[:, 1], atol=1e-5, rtol=0)
    torch.testing.assert_close(feats.patches[1].flatten(2).transpose(1, 2), tokens[:, 2:], atol=1e-5, rtol=0)
    with torch.no_grad():  # other sizes resample position embeddings the same way in training and evaluation
        torch.testing.assert_close(backbone.encode_image(torch.rand(1, 3, 84, 84)).globals["cls1"].shape[-1], 64)


@pytest.mark.parametrize("recipe", list(RECIPES))
def test_every_recipe_is_deterministic_and_loads(recipe, tmp_path):
    first = pretrain(tiny(recipe), tmp_path / "a", progress=False)
    pretrain(tiny(recipe), tmp_path / "b", progress=False)
    pretrain(tiny(recipe, seed=1), tmp_path / "c", progress=False)
    a, b, c = (_files(tmp_path / k) for k in "abc")
    assert a == b, "same seed must give identical bytes"
    vision = f"mini_{recipe}_vision.npz"
    assert a[vision] != c[vision], "another seed must give other weights"
    expected = {vision, "tokenizer.model"} | ({f"mini_{recipe}_text.npz"} if RECIPES[recipe].contrast else set())
    assert set(a) == expected

    record = json.loads((tmp_path / "a" / "recipe.json").read_text())
    assert record == first and record["recipe"] == recipe and record["steps"] == 2 and record["threads"] == 1
    assert record["files"] == {name: sha256(tmp_path / "a" / name) for name in expected}
    assert record["command"].startswith(f"tips-bench pretrain --recipe {recipe} --seed 0 --steps 2 --threads 1 ")
    assert set(record["final_losses"]) >= {"loss"} and all(np.isfinite(list(record["final_losses"].values())))

    backbone = load_backbone("tips", checkpoint=tmp_path / "a" / vision, num_heads=1, text_num_heads=1)
    feats = backbone.encode_image(torch.rand(2, 3, 56, 56), layers=[0], text_dense=True)
    assert feats.patches[0].shape == (2, 32, 4, 4) and torch.isfinite(feats.globals["cls2"]).all()
    if RECIPES[recipe].contrast:
        text = backbone.encode_text(["a red cube left of a blue sphere", "ball"])
        assert text.shape == (2, 32) and torch.isfinite(text).all()
        assert 1.0 < backbone.logit_scale <= 100.0


def test_minutes_budget_records_a_step_count_that_rebuilds_identically(tmp_path):
    timed = pretrain(tiny("tips_full", steps=None, minutes=0.01), tmp_path / "m", progress=False)
    assert timed["steps"] >= 5
    fixed = pretrain(tiny("tips_full", steps=timed["steps"]), tmp_path / "s", progress=False)
    assert fixed["steps"] == timed["steps"] and _files(tmp_path / "m") == _files(tmp_path / "s")
    assert all(v["identical"] for v in compare_folders(tmp_path / "m", tmp_path / "s").values())


def test_cli_trains_and_records_its_rebuild_command(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["pretrain", "--recipe", "clip_synthetic", "--out", str(out), *TINY_ARGS]) == 0
    printed = capsys.readouterr().out
    record = json.loads((out / "recipe.json").read_text())
    assert f"rebuild it: {record['command']}" in printed and "--backbone tips --checkpoint" in printed
    assert oct(out.stat().st_mode & 0o777) == "0o755"
    rebuilt = tmp_path / "rebuilt"
    argv = record["command"].split()[1:]
    argv[argv.index("--out") + 1] = str(rebuilt)
    assert main([*argv, "--no-progress"]) == 0
    assert _files(out) == _files(rebuilt)


@pytest.mark.parametrize("extra, message", [
    (["--recipe", "clip"], "unknown recipe 'clip'; choose one of clip_noisy"),
    (["--recipe", "tips_full", "--image-size", "100"], "--image-size 100 must be a positive multiple"),
    (["--recipe", "tips_full", "--steps", "0"], "--steps 0 must be at least 1"),
    (["--recipe", "tips_full", "--batch-size", "1"], "--batch-size 1 must be at least 2"),
    (["--recipe", "tips_full", "--width", "30", "--heads", "4"], "--width 30 must be even and divisible"),
    (["--recipe", "tips_full", "--device", "tpu"], "--device tpu is not cpu or cuda"),
])
def test_cli_bad_options_exit_2_with_one_sentence_and_write_nothing(tmp_path, capsys, extra, message):
    out = tmp_path / "out"
    argv = ["pretrain", "--out", str(out), *TINY_ARGS, *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("tips-bench: error: ") and message in err and "\n" not in err
    assert not out.exists() and os.listdir(tmp_path) == []


def test_cli_refuses_to_mix_into_an_existing_folder(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["pretrain", "--recipe", "clip_noisy", "--out", str(out), *TINY_ARGS]) == 2
    assert "already holds files" in capsys.readouterr().err
    assert os.listdir(out) == ["keep.txt"]
    assert main(["pretrain", "--recipe", "clip_noisy", "--out", str(out / "keep.txt"), *TINY_ARGS]) == 2
    assert "is a file" in capsys.readouterr().err
    assert main(["pretrain", "--recipe", "clip_noisy", "--out", str(out), "--overwrite", *TINY_ARGS]) == 0
    assert sorted(os.listdir(out)) == ["mini_clip_noisy_text.npz", "mini_clip_noisy_vision.npz", "recipe.json",
                                       "tokenizer.model"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary folder left behind


def test_cli_help_lists_recipes(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["pretrain", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert all(name in text for name in RECIPES) and "--minutes" in text and "recipe.json" in text


@pytest.mark.parametrize("name", MINI)
def test_shipped_mini_backbones_load_from_the_package(name):
    spec = get_backbone_spec(name)
    folder = bundled_dir(spec)
    assert folder is not None and folder.is_dir()
    files = CheckpointFiles(spec)
    assert all(files.status().values())
    record = json.loads((folder / "recipe.json").read_text())
    assert record["name"] == name and record["seed"] == 0
    assert record["command"] == (f"tips-bench pretrain --recipe {record['recipe']} --seed 0 --steps {record['steps']} "
                                 f"--threads 1 --out checkpoints/mini/{name}")
    assert record["files"] == {p.name: sha256(p) for p in sorted(folder.iterdir()) if p.name != "recipe.json"}
    # CPU time of the single training thread = wall time on an idle core; each must fit in 10 minutes
    assert record["threads"] == 1 and record["train_cpu_seconds"] <= 600
    assert sum(p.stat().st_size for p in folder.iterdir()) < 6_000_000  # a few MB each
    backbone = load_backbone(name)
    feats = backbone.encode_image(torch.rand(1, 3, 224, 224), layers=[0, 3], text_dense=spec.can("text"))
    assert feats.patches[3].shape == (1, 128, 16, 16)  # 112-px native grid interpolated to 224
    if spec.can("text"):
        assert backbone.encode_text(["a small red cube"]).shape == (1, 128)


@pytest.mark.slow
def test_a_shipped_checkpoint_is_rebuilt_by_its_recorded_command(tmp_path):
    """The cheapest shipped recipe, rebuilt from recipe.json's command (minutes of CPU): the same bytes on the
    same CPU and versions; elsewhere the stated tolerance (docs/mini_study.md): an identical tokenizer and
    every toy-suite headline inside the shipped backbone's regression band."""
    from tips_bench.cache import FeatureCache
    from tips_bench.runner import Runner, RunOptions
    from tips_bench.suite import read_baseline, suite_tasks
    from tips_bench.tasks.base import get_task_definition

    folder = bundled_dir(get_backbone_spec("mini_clip_noisy"))
    record = json.loads((folder / "recipe.json").read_text())
    argv = record["command"].split()[1:]
    argv[argv.index("--out") + 1] = str(tmp_path / "rebuilt")
    assert main([*argv, "--no-progress"]) == 0
    report = compare_folders(folder, tmp_path / "rebuilt")
    if record["cpu"] == json.loads((tmp_path / "rebuilt" / "recipe.json").read_text())["cpu"]:
        assert all(v["identical"] for v in report.values()), report
        return
    assert report["tokenizer.model"]["identical"]
    bands = {(b.task, b.metric): b for b in read_baseline(Path(__file__).parents[1] / "results" /
                                                          "mini_study_bands.csv") if b.backbone == "mini_clip_noisy"}
    runner = Runner(store=None, cache=FeatureCache(tmp_path / "cache"))
    opts = RunOptions(checkpoint=str(tmp_path / "rebuilt"), seed=0, progress=False, num_workers=0)
    for task in suite_tasks("toy"):
        headline = get_task_definition(task).headline
        value = next(r.value for r in runner.run("mini_clip_noisy", task, opts) if r.metric == headline)
        assert bands[(task, headline)].contains(value), (task, value, bands[(task, headline)])
