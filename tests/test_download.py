"""Checkpoint downloads against a loopback server: full, resumed, wrong checksum, 404, server gone, hub, offline."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from loopback import FileServer
from PIL import Image

from tips_bench.backbones.spec import BackboneSpec, get_backbone_spec
from tips_bench.cli import main
from tips_bench.download import SHA_FILE, STAGING, ensure_files, fetch_backbone, sources
from tips_bench.errors import CheckpointError

FIXTURES = Path(__file__).parent / "fixtures" / "tips"
PAYLOAD = bytes(np.random.default_rng(0).integers(0, 256, 300_000, dtype=np.uint8))


@pytest.fixture()
def server():
    srv = FileServer()
    yield srv
    srv.stop()


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    for var in ("TIPS_BENCH_OFFLINE", "HF_HUB_OFFLINE", "HF_ENDPOINT", "TIPS_BENCH_CHECKPOINTS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("TIPS_BENCH_CONFIG", str(tmp_path / "no-config.yaml"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")


def spec_for(urls: dict[str, str], files: dict[str, str], sha256: dict | None = None) -> BackboneSpec:
    data = yaml.safe_load((Path(__file__).parents[1] / "backbones" / "tips_b14.yaml").read_text())
    data["name"] = "loop_b14"
    data["checkpoint"] = {"files": files, "urls": urls, **({"sha256": sha256} if sha256 else {})}
    return BackboneSpec.from_dict(data)


def plain_spec(server: FileServer, sha256: str | None = None) -> BackboneSpec:
    server.files["ckpt/vision.npz"] = PAYLOAD
    return spec_for({"vision": f"{server.url}/ckpt/vision.npz"}, {"vision": "vision.npz"},
                    {"vision": sha256} if sha256 else None)


def leftovers(folder: Path) -> list[str]:
    """Anything in the folder besides final files and the checksum record (and its lock file)."""
    return sorted(p.name for p in folder.rglob("*") if p.name.endswith((".part", ".lock", ".hub")) and
                  p.name != f"{SHA_FILE}.lock" or p.name == STAGING)


def test_full_download_records_sha256_and_leaves_nothing_else(server, tmp_path):
    report = fetch_backbone(plain_spec(server), dir=tmp_path / "ck", progress=False)
    assert (tmp_path / "ck" / "vision.npz").read_bytes() == PAYLOAD
    assert [(f.relpath, f.status, f.size, f.fetched) for f in report.files] == [
        ("vision.npz", "downloaded", len(PAYLOAD), len(PAYLOAD))]
    record = json.loads((tmp_path / "ck" / SHA_FILE).read_text())
    assert record["vision.npz"]["sha256"] == hashlib.sha256(PAYLOAD).hexdigest()
    assert record["vision.npz"]["origin"] == "first download"
    assert [r.range for r in server.gets()] == [None]
    assert leftovers(tmp_path / "ck") == []
    again = fetch_backbone(plain_spec(server), dir=tmp_path / "ck", progress=False)
    assert [f.status for f in again.files] == ["present"] and len(server.gets()) == 1


def test_resumed_download_fetches_only_the_missing_bytes(server, tmp_path):
    spec = plain_spec(server, sha256=hashlib.sha256(PAYLOAD).hexdigest())
    server.drop_at = 120_000
    with pytest.raises(CheckpointError, match=r"broke off after 120000 of 300000 bytes .*run the same command again"):
        fetch_backbone(spec, dir=tmp_path, progress=False)
    assert not (tmp_path / "vision.npz").exists()
    assert (tmp_path / "vision.npz.part").stat().st_size == 120_000
    server.drop_at = None
    server.log.clear()
    report = fetch_backbone(spec, dir=tmp_path, progress=False)
    assert [(r.range, r.sent) for r in server.gets()] == [("bytes=120000-", 180_000)]
    assert report.files[0].fetched == 180_000 and report.files[0].resumed_from == 120_000
    assert (tmp_path / "vision.npz").read_bytes() == PAYLOAD
    assert leftovers(tmp_path) == []


def test_server_without_ranges_restarts_from_zero(server, tmp_path):
    spec = plain_spec(server)
    (tmp_path / "vision.npz.part").write_bytes(b"stale bytes from somewhere else")
    server.ranges = False
    report = fetch_backbone(spec, dir=tmp_path, progress=False)
    assert (tmp_path / "vision.npz").read_bytes() == PAYLOAD and report.files[0].fetched == len(PAYLOAD)


def test_wrong_checksum_deletes_the_download(server, tmp_path):
    spec = plain_spec(server, sha256=hashlib.sha256(PAYLOAD).hexdigest())
    server.corrupt.add("vision.npz")
    with pytest.raises(CheckpointError, match=r"has sha256 .* but .* the definition gives; the partial file was "
                                              r"deleted"):
        fetch_backbone(spec, dir=tmp_path, progress=False)
    assert leftovers(tmp_path) == [] and not (tmp_path / "vision.npz").exists()


def test_recorded_checksum_catches_a_changed_file(server, tmp_path):
    spec = plain_spec(server)
    fetch_backbone(spec, dir=tmp_path, progress=False)
    (tmp_path / "vision.npz").unlink()
    server.corrupt.add("vision.npz")
    with pytest.raises(CheckpointError, match=r"was recorded in .*\.tips-bench-sha256\.json"):
        fetch_backbone(spec, dir=tmp_path, progress=False)
    assert not (tmp_path / "vision.npz").exists() and leftovers(tmp_path) == []


def test_404_and_server_gone_are_one_sentence_with_nothing_left(server, tmp_path):
    spec = plain_spec(server)
    server.missing.add("/ckpt/vision.npz")
    with pytest.raises(CheckpointError, match=r"answered 404 Not Found for http://127\.0\.0\.1:\d+/ckpt/vision\.npz; "
                                              r"check the URL"):
        fetch_backbone(spec, dir=tmp_path, progress=False)
    assert leftovers(tmp_path) == [] and not (tmp_path / "vision.npz").exists()
    server.stop()
    with pytest.raises(CheckpointError, match=r"no connection to 127\.0\.0\.1:\d+ \(.*refused\)"):
        fetch_backbone(spec, dir=tmp_path, progress=False)
    assert leftovers(tmp_path) == [] and not (tmp_path / "vision.npz").exists()


def test_offline_names_the_missing_file_and_never_connects(server, tmp_path, monkeypatch):
    spec = plain_spec(server)
    with pytest.raises(CheckpointError, match=r"needs its vision file vision\.npz, which is not in .* are off"):
        fetch_backbone(spec, dir=tmp_path, offline=True, progress=False)
    monkeypatch.setenv("TIPS_BENCH_OFFLINE", "1")
    with pytest.raises(CheckpointError, match="downloads are off"):
        ensure_files(spec, dir=tmp_path, progress=False)
    assert server.log == []


def test_verify_detects_a_damaged_file(server, tmp_path, capsys):
    spec = plain_spec(server)
    fetch_backbone(spec, dir=tmp_path, progress=False)
    assert [f.status for f in fetch_backbone(spec, dir=tmp_path, verify=True).files] == ["verified"]
    with open(tmp_path / "vision.npz", "r+b") as fh:
        fh.write(b"\0\0\0\0")
    with pytest.raises(CheckpointError, match="damaged or not the official one: delete it and fetch it again"):
        fetch_backbone(spec, dir=tmp_path, verify=True)


def test_hub_files_and_listed_folder_via_huggingface_hub(server, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    tok = {"tokenizer.json": b'{"version": "1.0"}', "tokenizer_config.json": b"{}", "spiece.model": PAYLOAD[:5000]}
    server.add_hub_file("org/loop", "open_clip_model.safetensors", PAYLOAD)
    for name, data in tok.items():
        server.add_hub_file("org/loop", name, data)
    spec = spec_for({"model": "https://huggingface.co/org/loop/resolve/main/open_clip_model.safetensors",
                     "tokenizer": "https://huggingface.co/org/loop/tree/main (tokenizer.json, tokenizer_config.json, "
                                  "spiece.model)"},
                    {"model": "open_clip_model.safetensors", "tokenizer": "tokenizer"})
    report = fetch_backbone(spec, dir=tmp_path, progress=False)
    assert (tmp_path / "open_clip_model.safetensors").read_bytes() == PAYLOAD
    assert {p.name: p.read_bytes() for p in (tmp_path / "tokenizer").iterdir()} == tok  # no hub metadata inside
    assert sorted(f.relpath for f in report.files) == [
        "open_clip_model.safetensors", "tokenizer/spiece.model", "tokenizer/tokenizer.json",
        "tokenizer/tokenizer_config.json"]
    record = json.loads((tmp_path / SHA_FILE).read_text())
    assert record["open_clip_model.safetensors"]["origin"] == "hub"  # checked against the hub's LFS sha256
    assert leftovers(tmp_path) == [] and sorted(p.name for p in tmp_path.iterdir()) == [
        SHA_FILE, f"{SHA_FILE}.lock", "open_clip_model.safetensors", "tokenizer"]


def test_timm_style_hub_names(server, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    server.add_hub_file("timm/vit_loop", "open_clip_model.safetensors", PAYLOAD)
    server.add_hub_file("timm/vit_loop", "weights/v2.bin", PAYLOAD[:1000])
    spec = spec_for({"model": "hf-hub:timm/vit_loop", "vision": "hf-hub:timm/vit_loop@main/weights/v2.bin"},
                    {"model": "open_clip_model.safetensors", "vision": "v2.bin"})
    fetch_backbone(spec, dir=tmp_path, progress=False)
    assert (tmp_path / "open_clip_model.safetensors").read_bytes() == PAYLOAD
    assert (tmp_path / "v2.bin").read_bytes() == PAYLOAD[:1000]


def test_hub_errors_are_one_sentence(server, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    server.add_hub_file("org/loop", "model.safetensors", PAYLOAD)
    missing = spec_for({"model": "https://huggingface.co/org/loop/resolve/main/nothing.safetensors"},
                       {"model": "nothing.safetensors"})
    with pytest.raises(CheckpointError, match=r"answered 404 Not Found for nothing\.safetensors"):
        fetch_backbone(missing, dir=tmp_path, progress=False)
    corrupt = spec_for({"model": "https://huggingface.co/org/loop/resolve/main/model.safetensors"},
                       {"model": "model.safetensors"})
    server.corrupt.add("model.safetensors")
    with pytest.raises(CheckpointError, match=r"but .* the hub lists for org/loop; the partial file was deleted"):
        fetch_backbone(corrupt, dir=tmp_path, progress=False)
    server.stop()
    with pytest.raises(CheckpointError, match=r"no connection to http://127\.0\.0\.1:\d+"):
        fetch_backbone(corrupt, dir=tmp_path, progress=False)
    assert leftovers(tmp_path) == [] and not (tmp_path / "model.safetensors").exists()


def test_hub_folder_without_a_list_is_listed(server, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    server.add_hub_file("org/tok", "sub/vocab.json", b"{}")
    server.add_hub_file("org/tok", "sub/merges.txt", b"a b")
    server.add_hub_file("org/tok", "weights.bin", PAYLOAD)
    spec = spec_for({"tokenizer": "https://huggingface.co/org/tok/tree/main/sub"}, {"tokenizer": "tok"})
    fetch_backbone(spec, dir=tmp_path, progress=False)
    assert sorted(p.name for p in (tmp_path / "tok").iterdir()) == ["merges.txt", "vocab.json"]


def test_every_shipped_definition_is_fetchable_or_says_why():
    from tips_bench.backbones.spec import all_backbone_specs

    for spec in all_backbone_specs():
        if spec.name in ("tips", "openclip"):
            with pytest.raises(CheckpointError, match="loads any checkpoint of its family"):
                sources(spec)
            continue
        found = sources(spec)
        assert [s.role for s in found] == ([] if spec.checkpoint_bundled else list(spec.checkpoint_files))
    siglip = {s.role: s for s in sources(get_backbone_spec("siglip_so400m14"))}
    assert siglip["tokenizer"].folder and [f.relpath for f in siglip["tokenizer"].files] == [
        "tokenizer/tokenizer.json", "tokenizer/tokenizer_config.json", "tokenizer/special_tokens_map.json",
        "tokenizer/spiece.model"]
    assert siglip["model"].files[0].hub.repo_id == "timm/ViT-SO400M-14-SigLIP"


def test_same_file_name_from_another_url_is_refused(server, tmp_path):
    fetch_backbone(plain_spec(server), dir=tmp_path, progress=False)
    server.files["other/vision.npz"] = PAYLOAD[::-1]
    other = spec_for({"vision": f"{server.url}/other/vision.npz"}, {"vision": "vision.npz"})
    with pytest.raises(CheckpointError, match="two backbones use the same file name.*--dir"):
        fetch_backbone(other, dir=tmp_path, progress=False)


# ---------------------------------------------------------------- the CLI, end to end


def _fixture_definition(server: FileServer, root: Path) -> None:
    """A backbone definition whose files are the TIPS fixture checkpoint, served by the loopback server."""
    names = {"vision": "tips_fixture_mlp_vision.npz", "text": "tips_fixture_mlp_text.npz",
             "tokenizer": "tips_fixture_mlp_tokenizer.model"}
    for name in names.values():
        server.files[f"tips/{name}"] = (FIXTURES / name).read_bytes()
    data = yaml.safe_load((Path(__file__).parents[1] / "backbones" / "tips_b14.yaml").read_text())
    data.update(name="loop_tips", native_resolution=224, dense_layers=[0, 1, 2],
                architecture={"embed_dim": 128, "depth": 3, "num_heads": 2, "ffn": "mlp", "text_num_heads": 2,
                              "read_from_checkpoint": True},
                checkpoint={"files": {"vision": "v.npz", "text": "t.npz", "tokenizer": "tokenizer.model"},
                            "urls": {role: f"{server.url}/tips/{name}" for role, name in names.items()},
                            "sha256": {"vision": hashlib.sha256(server.files[f"tips/{names['vision']}"]).hexdigest()}})
    (root / "backbones").mkdir(parents=True)
    (root / "backbones" / "loop_tips.yaml").write_text(yaml.safe_dump(data))


def test_cli_fetch_then_features_and_run_download(server, tmp_path, monkeypatch, capsys):
    _fixture_definition(server, tmp_path / "defs")
    monkeypatch.setenv("TIPS_BENCH_PATH", str(tmp_path / "defs"))
    monkeypatch.setenv("TIPS_BENCH_CHECKPOINTS", str(tmp_path / "ckpt"))
    monkeypatch.setenv("TIPS_BENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TIPS_BENCH_RESULTS", str(tmp_path / "runs.jsonl"))

    assert main(["fetch", "loop_tips", "--dir", str(tmp_path / "other"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "v.npz: downloaded (2.7 MB, sha256" in out and "tokenizer.model: downloaded" in out
    assert main(["fetch", "loop_tips", "--dir", str(tmp_path / "other"), "--verify", "--no-progress"]) == 0
    assert "v.npz: sha256 verified" in capsys.readouterr().out

    image = tmp_path / "img.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(image)
    out_npz = tmp_path / "f.npz"
    features = ["features", "--backbone", "loop_tips", "--image-size", "28x28", "--out", str(out_npz), str(image)]
    assert main(features) == 2
    assert "needs its vision file v.npz" in capsys.readouterr().err
    assert main([*features, "--download"]) == 0
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == [
        SHA_FILE, f"{SHA_FILE}.lock", "t.npz", "tokenizer.model", "v.npz"]
    with np.load(out_npz) as feats:
        assert feats["patches"].shape == (1, 128, 2, 2) and np.isfinite(feats["patches"]).all()

    shutil.rmtree(tmp_path / "ckpt")
    gets = len(server.gets())
    (tmp_path / "given").mkdir()
    assert main(["run", "--backbone", "loop_tips", "--download", "--checkpoint", str(tmp_path / "given"), "--task",
                 "toy_knn", "--limit", "8", "--set", "resolution=28", "--no-progress"]) == 0
    assert len(server.gets()) == gets + 3 and (tmp_path / "given" / "v.npz").exists()
    assert not (tmp_path / "ckpt").exists()  # --checkpoint DIR is searched first, so the files go there

    capsys.readouterr()
    server.missing.add("/tips/tips_fixture_mlp_text.npz")
    assert main(["fetch", "loop_tips", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("tips-bench: error: the server answered 404") and "\n" not in err
    assert not (tmp_path / "ckpt" / "t.npz").exists() and not any(p.name.endswith(".part") for p in
                                                                   (tmp_path / "ckpt").iterdir())
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["fetch", "loop_tips", "--no-progress"]) == 2
    assert "downloads are off" in capsys.readouterr().err
    assert os.environ["TIPS_BENCH_PATH"]  # unchanged for the next tests (monkeypatch restores it)


def test_fetch_of_a_shipped_backbone_downloads_nothing(capsys, tmp_path):
    from tips_bench.cli import main

    assert main(["fetch", "mini_tips_full", "--dir", str(tmp_path), "--offline"]) == 0
    assert "ship with the package" in capsys.readouterr().out and not list(tmp_path.iterdir())
