"""Bad input at the edges: one table of cases, each must give exit status 2, exactly one line on stderr
(``tips-bench: error: ...``, no traceback) and leave the cache, the results store and the output folder untouched."""

from __future__ import annotations

import io
import json
import os
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from tips_bench.cli import main
from tips_bench.results import ResultRow

RUN = ["run", "--limit", "4", "--no-progress", "--num-workers", "0"]
PIX = [*RUN, "--backbone", "pixels", "--task", "toy_knn"]
RND = [*RUN, "--backbone", "tips_s14+random", "--task", "toy_knn"]
PIXT = [*RUN, "--backbone", "pixels"]  # the case names its task
KNN = [*RUN, "--task", "toy_knn"]  # the case names its backbone
FEAT = ["features", "--backbone", "pixels", "--out", "{out}/f.npz"]
RANDOM_BYTES = bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8))
BASELINE_HEADER = ("backbone,random_init,task,task_version,metric,higher_is_better,mean,std,n_seeds,band_k,"
                   "band_floor,low,high\n")


def _row_json() -> str:
    return ResultRow(
        run_id="r1", timestamp="2025-03-01T12:00:00+00:00", backbone="pixels", backbone_family="pixels",
        task="toy_knn", task_version=1, dataset="synthetic_objects", split="val", metric="top1", value=50.0,
        higher_is_better=True, seed=0, protocol={"resolution": 224}, config_hash="c", checkpoint_hash="",
        code_version="0", packages={}, device="cpu", wall_time_s=1.0, images_per_s=1.0, peak_memory_mb=1.0,
        num_samples=4, limit=None).to_json()


def write(name: str, data: bytes | str) -> Callable[[Path], None]:
    def setup(tmp: Path) -> None:
        path = tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode() if isinstance(data, str) else data)
    return setup


def mkdir(name: str) -> Callable[[Path], None]:
    return lambda tmp: (tmp / name).mkdir(parents=True, exist_ok=True)


def both(*setups: Callable[[Path], None]) -> Callable[[Path], None]:
    def setup(tmp: Path) -> None:
        for s in setups:
            s(tmp)
    return setup


def _npz(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _torch(obj: object) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _png16() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.zeros((8, 8), dtype=np.uint16)).save(buf, format="PNG")
    return buf.getvalue()


def _zip_without_npy() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("readme.txt", "hello")
    return buf.getvalue()


def env(name: str, value: str) -> Callable[[Path], None]:
    def setup(tmp: Path) -> None:
        os.environ[name] = value.format(tmp=tmp)
    return setup


TINY_NPZ = _npz(cls_token=np.zeros((1, 1, 8), np.float32), pos_embed=np.zeros((1, 5, 8), np.float32))
GOOD_IMAGE = _png16()
TIPS_CK = ["--backbone", "tips_s14", "--checkpoint", "{tmp}/ck/tips_s14_vision.npz"]
DINO_CK = ["--backbone", "dinov2_s14", "--checkpoint", "{tmp}/ck/dinov2_vits14_pretrain.pth"]
NO_SETUP: Callable[[Path], None] = lambda tmp: None  # noqa: E731

CASES: list[tuple[str, Callable[[Path], None], list[str]]] = [
    # checkpoints: foreign, damaged or incomplete files
    ("ckpt-text-as-pt", write("ck/ViT-B-16.pt", "this is not a checkpoint\n"),
     [*KNN, "--backbone", "clip_b16", "--checkpoint", "{tmp}/ck/ViT-B-16.pt"]),
    ("ckpt-random-bytes-pth", write("ck/dinov2_vits14_pretrain.pth", RANDOM_BYTES), [*KNN, *DINO_CK]),
    ("ckpt-npz-missing-arrays", write("ck/tips_s14_vision.npz", _npz(foo=np.zeros(3))), [*KNN, *TIPS_CK]),
    ("ckpt-npz-partial-arrays", write("ck/tips_s14_vision.npz", TINY_NPZ), [*KNN, *TIPS_CK]),
    ("ckpt-empty-file", write("ck/tips_s14_vision.npz", b""), [*KNN, *TIPS_CK]),
    ("ckpt-truncated-npz", write("ck/tips_s14_vision.npz", TINY_NPZ[: len(TINY_NPZ) // 2]), [*KNN, *TIPS_CK]),
    ("ckpt-zip-without-arrays", write("ck/tips_s14_vision.npz", _zip_without_npy()), [*KNN, *TIPS_CK]),
    ("ckpt-pth-holds-a-list", write("ck/dinov2_vits14_pretrain.pth", _torch([1, 2, 3])), [*KNN, *DINO_CK]),
    ("ckpt-pth-foreign-state-dict", write("ck/dinov2_vits14_pretrain.pth", _torch({"a.weight": torch.zeros(2)})),
     [*KNN, *DINO_CK]),
    ("ckpt-truncated-pth", write("ck/dinov2_vits14_pretrain.pth", _torch({"a": torch.zeros(64)})[:300]),
     [*KNN, *DINO_CK]),
    ("ckpt-garbage-safetensors", write("ck/model.safetensors", RANDOM_BYTES),
     [*KNN, "--backbone", "dinov2_s14", "--checkpoint", "{tmp}/ck/model.safetensors"]),
    ("ckpt-does-not-exist", NO_SETUP, [*KNN, "--backbone", "tips_s14", "--checkpoint", "{tmp}/nope.npz"]),
    ("ckpt-features-random-bytes", both(write("ck/tips_s14_vision.npz", RANDOM_BYTES), write("img.png", GOOD_IMAGE)),
     ["features", *TIPS_CK, "--out", "{out}/f.npz", "{tmp}/img.png"]),
    ("ckpt-missing-no-download", NO_SETUP, [*KNN, "--backbone", "tips_s14"]),
    # numeric options
    ("batch-size-0", NO_SETUP, [*PIX, "--batch-size", "0"]),
    ("batch-size-negative", NO_SETUP, [*PIX, "--batch-size", "-4"]),
    ("batch-size-not-int", NO_SETUP, [*PIX, "--batch-size", "many"]),
    ("num-workers-negative", NO_SETUP, [*PIX, "--num-workers", "-1"]),
    ("limit-negative", NO_SETUP, [*PIX, "--limit", "-1"]),
    ("limit-zero", NO_SETUP, [*PIX, "--limit", "0"]),
    ("limit-not-int", NO_SETUP, [*PIX, "--limit", "abc"]),
    ("seeds-zero", NO_SETUP, [*PIX, "--seeds", "0"]),
    ("seeds-negative", NO_SETUP, [*PIX, "--seeds", "-2"]),
    ("seed-negative", NO_SETUP, [*PIX, "--seed", "-1"]),
    ("num-heads-not-dividing", NO_SETUP, [*RND, "--num-heads", "5"]),
    ("num-heads-zero", NO_SETUP, [*RND, "--num-heads", "0"]),
    ("text-num-heads-negative", NO_SETUP, [*RND, "--text-num-heads", "-2"]),
    # --set overrides
    ("set-epochs-not-number", NO_SETUP, [*PIXT, "--task", "toy_linear", "--set", "probe.epochs=abc"]),
    ("set-epochs-negative", NO_SETUP, [*PIXT, "--task", "toy_linear", "--set", "probe.epochs=-3"]),
    ("set-unknown-key", NO_SETUP, [*PIX, "--set", "nosuchkey=1"]),
    ("set-without-equals", NO_SETUP, [*PIX, "--set", "probe.epochs"]),
    ("set-empty-key", NO_SETUP, [*PIX, "--set", "=1"]),
    ("set-bad-yaml-value", NO_SETUP, [*PIX, "--set", "k=[1,"]),
    ("set-resolution-not-patch-multiple", NO_SETUP, [*RND, "--set", "resolution=100"]),
    # devices, precision, modes, formats
    ("device-unknown", NO_SETUP, [*PIX, "--device", "foo"]),
    ("device-cuda-index-out-of-range", NO_SETUP, [*PIX, "--device", "cuda:99"]),
    pytest.param("device-cuda-without-cuda", NO_SETUP, [*PIX, "--device", "cuda"],
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")),
    ("precision-invalid", NO_SETUP, [*PIX, "--precision", "fp8"]),
    ("mode-invalid", NO_SETUP, [*PIX, "--mode", "fast"]),
    ("format-invalid", NO_SETUP, [*PIX, "--format", "xml"]),
    ("option-unknown", NO_SETUP, [*PIX, "--bogus"]),
    ("command-unknown", NO_SETUP, ["frobnicate"]),
    # names
    ("task-unknown", NO_SETUP, ["run", "--backbone", "pixels", "--task", "no_such_task"]),
    ("backbone-unknown", NO_SETUP, [*KNN, "--backbone", "no_such_backbone"]),
    ("suite-unknown", NO_SETUP, ["run", "--backbone", "pixels", "--suite", "no_such_suite"]),
    ("text-task-on-image-only", NO_SETUP, [*RUN, "--backbone", "pixels", "--task", "toy_zeroshot"]),
    # config files and definitions
    ("config-is-yaml-list", both(write("config.yaml", "- a\n- b\n"), env("TIPS_BENCH_CONFIG", "{tmp}/config.yaml")),
     [*KNN, "--backbone", "tips_s14"]),
    ("config-bad-yaml", both(write("config.yaml", "a: [1,\n"), env("TIPS_BENCH_CONFIG", "{tmp}/config.yaml")),
     [*KNN, "--backbone", "tips_s14"]),
    ("config-dirs-not-list", both(write("config.yaml", "checkpoint_dirs: 3\n"),
                                  env("TIPS_BENCH_CONFIG", "{tmp}/config.yaml")), [*KNN, "--backbone", "tips_s14"]),
    ("task-definition-bad-yaml", both(write("defs/tasks/broken.yaml", "name: [\n"),
                                      env("TIPS_BENCH_PATH", "{tmp}/defs")), PIX),
    # the results store and the cache folder
    ("results-is-folder", mkdir("resdir"), [*PIX, "--results", "{tmp}/resdir"]),
    ("results-below-file", NO_SETUP, [*PIX, "--results", "{results}/runs.jsonl"]),
    ("results-env-is-folder", both(mkdir("resdir"), env("TIPS_BENCH_RESULTS", "{tmp}/resdir")), PIX),
    ("results-corrupt-line", write("bad.jsonl", "{not json\n"), ["report", "--results", "{tmp}/bad.jsonl"]),
    ("results-empty", write("empty.jsonl", ""), ["report", "--results", "{tmp}/empty.jsonl"]),
    ("cache-dir-is-file", NO_SETUP, [*PIX, "--cache-dir", "{results}"]),
    ("cache-dir-below-file", NO_SETUP, [*PIX, "--cache-dir", "{results}/cache"]),
    ("cache-env-is-file", env("TIPS_BENCH_CACHE", "{tmp}/results.jsonl"), PIX),
    ("shard-mb-not-number", env("TIPS_BENCH_SHARD_MB", "abc"), RND),
    ("shard-mb-zero", env("TIPS_BENCH_SHARD_MB", "0"), RND),
    # export and report outputs
    ("export-csv-onto-folder", NO_SETUP, ["export", "--csv", "{out}"]),
    ("export-csv-below-file", NO_SETUP, ["export", "--csv", "{results}/board.csv"]),
    ("export-parquet-below-file", NO_SETUP, ["export", "--parquet", "{results}/board.parquet"]),
    ("export-out-unknown-suffix", NO_SETUP, ["export", "--out", "{out}/board.txt"]),
    ("export-no-target", NO_SETUP, ["export"]),
    ("report-plot-below-file", NO_SETUP, ["report", "--plot", "{results}/plots"]),
    ("report-plot-onto-file", write("out/plots", "x"), ["report", "--plot", "{out}/plots"]),
    ("report-html-onto-file", write("out/page", "x"), ["report", "--html", "{out}/page"]),
    ("report-html-below-file", NO_SETUP, ["report", "--html", "{results}/html"]),
    ("report-task-without-results", NO_SETUP, ["report", "--task", "toy_seg"]),
    # regression baselines
    ("baseline-non-numeric-band", write("b.csv", BASELINE_HEADER
                                        + "pixels,False,toy_knn,1,top1,True,50,1,3,3,1,abc,60\n"),
     ["regress", "--baseline", "{tmp}/b.csv", "--limit", "4"]),
    ("baseline-header-only", write("b.csv", BASELINE_HEADER), ["regress", "--baseline", "{tmp}/b.csv"]),
    ("baseline-empty-file", write("b.csv", ""), ["regress", "--baseline", "{tmp}/b.csv"]),
    ("baseline-missing-columns", write("b.csv", "backbone,task\npixels,toy_knn\n"),
     ["regress", "--baseline", "{tmp}/b.csv"]),
    ("baseline-does-not-exist", NO_SETUP, ["regress", "--baseline", "{tmp}/nope.csv"]),
    ("baseline-is-folder", mkdir("bdir"), ["regress", "--baseline", "{tmp}/bdir"]),
    ("baseline-binary", write("b.csv", RANDOM_BYTES), ["regress", "--baseline", "{tmp}/b.csv"]),
    ("baseline-low-above-high", write("b.csv", BASELINE_HEADER
                                      + "pixels,False,toy_knn,1,top1,True,50,1,3,3,1,70,60\n"),
     ["regress", "--baseline", "{tmp}/b.csv"]),
    ("baseline-unknown-task", write("b.csv", BASELINE_HEADER + "pixels,False,nosuch,1,top1,True,50,1,3,3,1,40,60\n"),
     ["regress", "--baseline", "{tmp}/b.csv"]),
    ("regress-update-onto-folder", NO_SETUP, ["regress", "--update", "{out}", "--backbone", "pixels",
                                              "--task", "toy_knn", "--limit", "4"]),
    ("regress-include-missing", NO_SETUP, ["regress", "--update", "{out}/b.csv", "--include", "{tmp}/nope.csv",
                                           "--backbone", "pixels", "--task", "toy_knn", "--limit", "4"]),
    # features
    ("features-corrupt-image", write("img.png", RANDOM_BYTES), [*FEAT, "{tmp}/img.png"]),
    ("features-empty-image", write("img.jpg", b""), [*FEAT, "{tmp}/img.jpg"]),
    ("features-truncated-image", write("img.png", GOOD_IMAGE[:40]), [*FEAT, "{tmp}/img.png"]),
    ("features-image-missing", NO_SETUP, [*FEAT, "{tmp}/nope.png"]),
    ("features-image-is-folder", mkdir("imgs"), [*FEAT, "{tmp}/imgs"]),
    ("features-size-not-patch-multiple", write("img.png", GOOD_IMAGE),
     ["features", "--backbone", "tips_s14", "--random-init", "--image-size", "100", "--out", "{out}/f.npz",
      "{tmp}/img.png"]),
    ("features-size-malformed", write("img.png", GOOD_IMAGE), [*FEAT, "--image-size", "abc", "{tmp}/img.png"]),
    ("features-size-zero", write("img.png", GOOD_IMAGE), [*FEAT, "--image-size", "0x0", "{tmp}/img.png"]),
    ("features-out-onto-folder", both(write("img.png", GOOD_IMAGE), mkdir("out/f.npz")), [*FEAT, "{tmp}/img.png"]),
    ("features-out-below-file", write("img.png", GOOD_IMAGE),
     ["features", "--backbone", "pixels", "--out", "{results}/f.npz", "{tmp}/img.png"]),
    ("features-out-not-npz", write("img.png", GOOD_IMAGE),
     ["features", "--backbone", "pixels", "--out", "{out}/f.txt", "{tmp}/img.png"]),
    ("features-layers-malformed", write("img.png", GOOD_IMAGE), [*FEAT, "--layers", "a,b", "{tmp}/img.png"]),
    ("features-layers-out-of-range", write("img.png", GOOD_IMAGE),
     ["features", "--backbone", "tips_s14", "--random-init", "--layers", "99", "--out", "{out}/f.npz",
      "{tmp}/img.png"]),
    ("features-batch-size-0", write("img.png", GOOD_IMAGE), [*FEAT, "--batch-size", "0", "{tmp}/img.png"]),
    ("features-no-out", write("img.png", GOOD_IMAGE), ["features", "--backbone", "pixels", "{tmp}/img.png"]),
    # data
    ("data-check-unknown", NO_SETUP, ["data", "check", "no_such_dataset"]),
    ("data-check-root-missing", NO_SETUP, ["data", "check", "voc", "--root", "{tmp}/nope"]),
    ("data-check-root-is-file", NO_SETUP, ["data", "check", "voc", "--root", "{results}"]),
    ("paper-task-root-missing", NO_SETUP, [*PIXT, "--task", "voc_seg", "--root", "{tmp}/nope"]),
    ("data-root-is-file", NO_SETUP, [*PIXT, "--task", "voc_seg", "--data-root", "{results}"]),
    # cache maintenance
    ("cache-rm-unknown-backbone", NO_SETUP, ["cache", "rm", "--backbone", "no_such_backbone", "--yes"]),
    ("cache-rm-unknown-task", NO_SETUP, ["cache", "rm", "--task", "no_such_task", "--yes"]),
    ("cache-rm-unknown-key", NO_SETUP, ["cache", "rm", "deadbeef", "--yes"]),
    ("cache-ls-dir-is-file", NO_SETUP, ["cache", "ls", "--cache-dir", "{results}"]),
    # fetch
    ("fetch-unknown-backbone", NO_SETUP, ["fetch", "no_such_backbone"]),
    ("fetch-offline-missing", NO_SETUP, ["fetch", "tips_s14", "--offline", "--dir", "{tmp}/ck"]),
    ("fetch-dir-is-file", NO_SETUP, ["fetch", "tips_s14", "--offline", "--dir", "{results}"]),
    # pretrain
    ("pretrain-recipe-unknown", NO_SETUP, ["pretrain", "--recipe", "nosuch", "--out", "{out}/p"]),
    ("pretrain-steps-zero", NO_SETUP, ["pretrain", "--recipe", "tips_full", "--steps", "0", "--out", "{out}/p"]),
    ("pretrain-out-existing-file", write("out/p", "x"), ["pretrain", "--recipe", "tips_full", "--steps", "1",
                                                         "--out", "{out}/p"]),
    ("pretrain-batch-size-zero", NO_SETUP, ["pretrain", "--recipe", "tips_full", "--batch-size", "0",
                                            "--out", "{out}/p"]),
    ("pretrain-image-size-not-patch-multiple", NO_SETUP, ["pretrain", "--recipe", "tips_full", "--image-size", "100",
                                                          "--out", "{out}/p"]),
    ("pretrain-heads-not-dividing", NO_SETUP, ["pretrain", "--recipe", "tips_full", "--heads", "5",
                                               "--out", "{out}/p"]),
    ("pretrain-minutes-negative", NO_SETUP, ["pretrain", "--recipe", "tips_full", "--minutes", "-1",
                                             "--out", "{out}/p"]),
    ("pretrain-lr-zero", NO_SETUP, ["pretrain", "--recipe", "tips_full", "--lr", "0", "--out", "{out}/p"]),
    ("pretrain-threads-zero", NO_SETUP, ["pretrain", "--recipe", "tips_full", "--threads", "0", "--out", "{out}/p"]),
    ("pretrain-device-unknown", NO_SETUP, ["pretrain", "--recipe", "tips_full", "--device", "foo",
                                           "--out", "{out}/p"]),
    # selftest
    ("selftest-task-unknown", NO_SETUP, ["selftest", "--task", "no_such_task"]),
    ("selftest-limit-zero", NO_SETUP, ["selftest", "--task", "toy_knn", "--limit", "0"]),
    ("selftest-batch-size-zero", NO_SETUP, ["selftest", "--task", "toy_knn", "--batch-size", "0"]),
    ("backbones-width-zero", NO_SETUP, ["backbones", "--width", "0"]),
]


def _snapshot(*roots: Path) -> dict[str, bytes | None]:
    snap: dict[str, bytes | None] = {}
    for root in roots:
        if root.is_file():
            snap[str(root)] = root.read_bytes()
        for p in sorted(root.rglob("*")) if root.is_dir() else []:
            snap[str(p)] = p.read_bytes() if p.is_file() else None
    return snap


def _ids(case) -> str:
    return case.values[0] if hasattr(case, "values") else case[0]


@pytest.mark.parametrize("case_id, setup, argv", CASES, ids=[_ids(c) for c in CASES])
def test_bad_input(case_id: str, setup: Callable[[Path], None], argv: list[str], tmp_path: Path,
                   monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    cache, out, results = tmp_path / "cache", tmp_path / "out", tmp_path / "results.jsonl"
    cache.mkdir()
    (cache / "keep.txt").write_text("cache folder content\n")
    out.mkdir()
    (out / "keep.txt").write_text("output folder content\n")
    results.write_text(_row_json() + "\n")
    for name, value in {"TIPS_BENCH_CACHE": cache, "TIPS_BENCH_RESULTS": results, "TIPS_BENCH_OFFLINE": "1",
                        "TIPS_BENCH_CHECKPOINTS": tmp_path / "no_checkpoints", "TIPS_BENCH_DATA": tmp_path / "data",
                        "TIPS_BENCH_CONFIG": tmp_path / "no_config.yaml", "HF_HUB_OFFLINE": "1"}.items():
        monkeypatch.setenv(name, str(value))
    for name in ("TIPS_BENCH_PATH", "TIPS_BENCH_SHARD_MB", "RANK", "WORLD_SIZE", "SLURM_PROCID"):
        monkeypatch.setenv(name, "")  # recorded, so that what a case's setup sets is undone afterwards
        monkeypatch.delenv(name)
    setup(tmp_path)
    before = _snapshot(cache, results, out)
    args = [a.format(tmp=tmp_path, out=out, results=results, cache=cache) for a in argv]
    try:
        code = main(args)
    except SystemExit as exc:  # argparse must not exit past main()
        code = f"SystemExit({exc.code})"
    err = capsys.readouterr().err
    lines = err.strip("\n").split("\n")
    assert code == 2, f"{case_id}: exit {code}, stderr: {err!r}"
    assert "Traceback" not in err
    assert len(lines) == 1 and lines[0].startswith("tips-bench: error:") and len(lines[0]) > 20, err
    assert _snapshot(cache, results, out) == before, f"{case_id} changed files on disk"


def test_case_table_is_large() -> None:
    assert len({_ids(c) for c in CASES}) == len(CASES) >= 60


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    from PIL import Image

    from tips_bench.images import read_image

    values = np.linspace(0, 65535, 64).astype(np.uint16).reshape(8, 8)
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)
    assert Image.open(path).mode.startswith("I")
    loaded = read_image(path)
    assert loaded.dtype == np.float32 and loaded.shape == (8, 8, 3)
    np.testing.assert_allclose(loaded[..., 0], values / 65535.0, atol=1e-6)
    np.testing.assert_allclose(loaded[..., 2], loaded[..., 0])


@pytest.mark.parametrize("mode", ["F", "I", "LA", "P", "CMYK", "L", "RGBA", "1"])
def test_other_modes_stay_in_unit_range(tmp_path: Path, mode: str) -> None:
    from PIL import Image

    from tips_bench.images import read_image

    rng = np.random.default_rng(0)
    base = Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8))
    if mode == "F":
        img = Image.fromarray(rng.random((6, 6), dtype=np.float32))
    elif mode == "I":
        img = Image.fromarray(rng.integers(0, 65536, (6, 6)).astype(np.int32), mode="I")
    else:
        img = base.convert(mode)
    suffix = ".tiff" if mode in ("F", "I", "CMYK") else ".png"
    path = tmp_path / f"img{suffix}"
    img.save(path)
    loaded = read_image(path)
    assert loaded.shape == (6, 6, 3) and loaded.dtype == np.float32
    assert loaded.min() >= 0.0 and loaded.max() <= 1.0
    if mode == "F":
        np.testing.assert_allclose(loaded[..., 0], np.asarray(img), atol=1e-6)


def test_snapshot_helper_sees_changes(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("1")
    before = _snapshot(tmp_path)
    (tmp_path / "a").write_text("2")
    assert _snapshot(tmp_path) != before
    assert json.dumps(sorted(before)) != "[]"


def test_a_corrupt_results_line_is_one_warning_line_not_python_source(tmp_path: Path, capsys) -> None:
    results = tmp_path / "runs.jsonl"
    results.write_text(_row_json() + "\n{not json\n")
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        assert main(["report", "--results", str(results)]) == 0
    err = capsys.readouterr().err
    assert err.startswith(f"tips-bench: warning: {results}:2: skipping corrupt result line"), err
    assert "warnings.warn" not in err and "RuntimeWarning" not in err and err.count("\n") == 1
