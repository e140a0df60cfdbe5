"""Global-embedding datasets: ImageNet-1k, UnED, COCO / Flickr30k (Karpathy) and DOCCI, on tiny fixtures."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
from fixture_writers.captions import (
    COCO_IMAGES,
    image_colour,
    write_coco_karpathy,
    write_docci,
    write_flickr30k_karpathy,
)
from fixture_writers.imagenet import FIXTURE_WNIDS, class_colour, write_imagenet
from fixture_writers.uned import item_colour, write_uned

from tips_bench.data import captions as cap
from tips_bench.data import imagenet as inet
from tips_bench.data import uned
from tips_bench.data.base import registered_datasets
from tips_bench.errors import DatasetError


def _corrupt(path: Path) -> None:
    path.write_bytes(b"\x00garbage, not a JPEG\xff" * 8)


def _close(image: np.ndarray, colour: tuple[int, int, int]) -> bool:
    return bool(np.abs(image.reshape(-1, 3).mean(0) - np.array(colour)).max() < 4)


# ----------------------------------------------------------------------------------------------- ImageNet

TENCH, GOLDFISH, TOILET_PAPER = FIXTURE_WNIDS  # canonical indices 0, 1, 999


@pytest.fixture(params=["folders", "flat"])
def imagenet_root(request, tmp_path) -> Path:
    return write_imagenet(tmp_path / "imagenet", val_layout=request.param)


def test_imagenet_val_labels_ids_and_names(imagenet_root):
    ds = inet.ImageNet(imagenet_root, "val")
    # val images 1, 2, 3 hold sorted classes 2, 0, 1 (both layouts give file-name order).
    assert [ds[i]["id"] for i in range(3)] == [f"ILSVRC2012_val_0000000{n}" for n in (1, 2, 3)]
    assert ds.labels.tolist() == [2, 0, 1]
    assert [ds[i]["label"] for i in range(3)] == [2, 0, 1]
    assert ds.info.num_classes == 3
    assert ds.info.extra["wnids"] == FIXTURE_WNIDS
    assert ds.info.class_names == ("tench", "goldfish", "toilet paper")
    sample = ds[0]
    assert sample["image"].dtype == np.uint8 and sample["image"].shape == (40, 48, 3)
    assert _close(sample["image"], class_colour(2))
    layout = "folders" if (imagenet_root / "val" / TENCH).is_dir() else "flat+devkit"
    assert ds.info.extra["layout"] == layout


def test_imagenet_train_order_subset_and_pickle(imagenet_root):
    ds = inet.ImageNet(imagenet_root, "train")
    ids = [ds[i]["id"] for i in range(len(ds))]
    # names sort as strings: <wnid>_10 before <wnid>_9.
    assert ids == [f"{w}_{n}" for w in FIXTURE_WNIDS for n in (10, 9)]
    assert ds.labels.tolist() == [0, 0, 1, 1, 2, 2]
    sub = inet.ImageNet(imagenet_root, "train", subset_per_class=1)
    assert [sub[i]["id"] for i in range(len(sub))] == [f"{w}_10" for w in FIXTURE_WNIDS]
    assert sub.labels.tolist() == [0, 1, 2]
    clone = pickle.loads(pickle.dumps(ds))
    assert clone[5]["label"] == 2 and _close(clone[5]["image"], class_colour(2))
    with pytest.raises(DatasetError):
        inet.ImageNet(imagenet_root, "train", subset_per_class=0)


def test_imagenet_global_label_space(imagenet_root):
    ds = inet.ImageNet(imagenet_root, "val", label_space="imagenet1k")
    assert ds.labels.tolist() == [999, 0, 1]
    assert ds.info.num_classes == 1000 and ds.info.class_names == inet.imagenet_classnames()
    assert inet.imagenet_wnids()[999] == TOILET_PAPER


def test_imagenet_open_clip_metadata():
    names = inet.imagenet_classnames()
    assert len(names) == 1000 and names[0] == "tench" and names[-1] == "toilet paper"
    templates = inet.imagenet_templates()
    assert len(templates) == 80 and all("{c}" in t for t in templates)
    assert templates[0].format(c="tench") == "a bad photo of a tench."


def test_imagenet_partial_names(tmp_path, monkeypatch):
    root = write_imagenet(tmp_path / "a", wnids=(TENCH, "n99999999"))
    ds = inet.ImageNet(root, "val")
    assert ds.info.extra["wnids"] == (TENCH, "n99999999") and ds.info.class_names == ()
    assert any("outside ImageNet-1k" in p for p in inet.check_imagenet(root, expect_full=False))
    with pytest.raises(DatasetError, match="n99999999"):
        inet.ImageNet(root, "val", label_space="imagenet1k")
    # Without the canonical list, names are known only when all 1000 classes are present.
    monkeypatch.setattr(inet, "_canonical_wnids", lambda: None)
    assert inet.ImageNet(write_imagenet(tmp_path / "b"), "val").info.class_names == ()
    full = write_imagenet(tmp_path / "c", wnids=(TENCH,))
    for k in range(999):
        (full / "train" / f"n{k:08d}").mkdir()
    ds = inet.ImageNet(full, "train")
    assert ds.info.num_classes == 1000 and ds.info.class_names == inet.imagenet_classnames()


def test_imagenet_union_of_train_and_val_classes(tmp_path):
    root = write_imagenet(tmp_path / "im")
    shutil.rmtree(root / "val" / GOLDFISH)
    val = inet.ImageNet(root, "val")
    assert val.info.extra["wnids"] == FIXTURE_WNIDS and val.labels.tolist() == [2, 0]
    assert any("train and val classes differ" in p for p in inet.check_imagenet(root, expect_full=False))


def test_imagenet_check_and_errors(imagenet_root):
    assert inet.check_imagenet(imagenet_root, expect_full=False) == []
    full = inet.check_imagenet(imagenet_root)
    assert any("expected 1000" in p for p in full) and any("expected 50,000" in p for p in full)
    assert registered_datasets()["imagenet"].check is inet.check_imagenet
    folder = imagenet_root / "val" / TENCH
    victim = (folder if folder.is_dir() else imagenet_root / "val") / "ILSVRC2012_val_00000002.JPEG"
    _corrupt(victim)
    with pytest.raises(DatasetError, match=victim.name):
        inet.ImageNet(imagenet_root, "val")[1]
    shutil.rmtree(imagenet_root / "val")
    assert any(str(imagenet_root / "val") in p for p in inet.check_imagenet(imagenet_root, expect_full=False))
    with pytest.raises(DatasetError, match=str(imagenet_root / "val")):
        inet.ImageNet(imagenet_root, "val")
    with pytest.raises(DatasetError, match="unknown ImageNet split"):
        inet.ImageNet(imagenet_root, "test")


def test_imagenet_flat_val_needs_devkit(tmp_path):
    root = write_imagenet(tmp_path / "im", val_layout="flat")
    gt = root / "ILSVRC2012_devkit_t12" / "data" / "ILSVRC2012_validation_ground_truth.txt"
    gt.unlink()
    with pytest.raises(DatasetError, match=gt.name):
        inet.ImageNet(root, "val")
    assert any(str(gt) in p for p in inet.check_imagenet(root, expect_full=False))
    # the devkit files may also sit directly in the root
    devkit = root / "ILSVRC2012_devkit_t12" / "data"
    gt.parent.mkdir(parents=True, exist_ok=True)
    (root / gt.name).write_text("2\n3\n1\n")  # ILSVRC2012_IDs -> wnids via meta.mat
    shutil.move(devkit / "meta.mat", root / "meta.mat")
    assert inet.ImageNet(root, "val").labels.tolist() == [2, 0, 1]
    (root / "meta.mat").write_bytes(b"not a mat file")
    with pytest.raises(DatasetError, match="meta.mat"):
        inet.ImageNet(root, "val")


# ----------------------------------------------------------------------------------------------- UnED


@pytest.fixture
def uned_root(tmp_path) -> Path:
    return write_uned(tmp_path / "uned")


def test_uned_query_and_merged_index(uned_root):
    r = uned.UnedRetrieval(uned_root)
    assert r.domains == uned.DOMAINS
    assert len(r.query) == 15 and len(r.index) == 17
    assert r.query.info.extra["counts"] == {
        "cars": 3,
        "sop": 2,
        "inshop": 2,
        "inat": 2,
        "met": 1,
        "gldv2": 1,
        "food2k": 2,
        "rp2k": 2,
    }
    assert r.index.slices == {
        "cars": (0, 3),
        "sop": (3, 5),
        "inshop": (5, 7),
        "inat": (7, 9),
        "met": (9, 11),
        "gldv2": (11, 13),
        "food2k": (13, 15),
        "rp2k": (15, 17),
    }
    # queries of self-indexed domains are themselves in the index; inshop / met / gldv2 are not.
    assert r.self_index.tolist() == [0, 1, 2, 3, 4, -1, -1, 7, 8, -1, -1, 13, 14, 15, 16]
    for q, i in enumerate(r.self_index):
        if i >= 0:
            assert r.query[q]["id"] == r.index[int(i)]["id"]
    # class 1 exists in cars, sop, inshop, gldv2, food2k and rp2k: only same-domain items are relevant.
    assert np.flatnonzero(r.relevant(0)).tolist() == [0, 1]
    assert np.flatnonzero(r.relevant(3)).tolist() == [3, 4]
    assert np.flatnonzero(r.relevant(5)).tolist() == [5]  # inshop query with class_id [1]
    assert np.flatnonzero(r.relevant(9)).tolist() == [9]  # met test -> met index (train set)
    assert np.flatnonzero(r.relevant(10)).tolist() == [11]  # gldv2 query with class ids [1, 9]
    q = r.query[10]
    assert q["domain"] == "gldv2" and q["label"] == 1 and r.query.label_sets[10] == (1, 9)
    assert q["id"] == "gldv2/images/test/0/0/0/000aaa.jpg"
    assert _close(q["image"], item_colour("gldv2", "test", 0))
    assert r.index.info.extra["domains"] == uned.DOMAINS
    assert pickle.loads(pickle.dumps(r)).index[16]["domain"] == "rp2k"


def test_uned_rp2k_escaped_names_and_domain_subset(uned_root):
    ds = uned.UnedDataset(uned_root, "query", domains=("rp2k",))
    assert [ds[i]["id"] for i in range(2)] == ["rp2k/all/test/可乐/1.jpg", "rp2k/all/test/雪碧/2.jpg"]
    assert ds.image_path(0).parent.name == "#U53ef#U4e50"
    assert _close(ds[0]["image"], item_colour("rp2k", "test", 0))
    assert uned.rp2k_escaped("a/é/中") == "a/#U00e9/#U4e2d"
    r = uned.UnedRetrieval(uned_root, domains=("inshop", "cars"))
    assert r.domains == ("cars", "inshop") and r.self_index.tolist() == [0, 1, 2, -1, -1]
    assert [r.index[i]["domain"] for i in range(len(r.index))] == ["cars"] * 3 + ["inshop"] * 2
    with pytest.raises(DatasetError, match="unknown UnED domain"):
        uned.UnedRetrieval(uned_root, domains=("imagenet",))


def test_uned_check_and_errors(uned_root):
    assert uned.check_uned(uned_root, expect_full=False) == []
    assert any("expected 761,757" in p for p in uned.check_uned(uned_root))
    info = uned_root / "info_files" / "met" / "index.json"
    info.unlink()
    assert any(str(info) in p for p in uned.check_uned(uned_root, expect_full=False))
    with pytest.raises(DatasetError, match=str(info)):
        uned.UnedDataset(uned_root, "index")
    uned.UnedDataset(uned_root, "query")  # queries do not need met's index file
    bad = uned_root / "info_files" / "cars" / "test.json"
    bad.write_text('[{"path": "cars/car_ims/000001.jpg", "class_id": 1},')
    with pytest.raises(DatasetError, match="not valid JSON"):
        uned.UnedDataset(uned_root, "query")
    bad.write_text(json.dumps([{"path": "cars/car_ims/000001.jpg", "class_id": "one"}]))
    with pytest.raises(DatasetError, match="class_id"):
        uned.UnedDataset(uned_root, "query")


def test_uned_missing_and_corrupt_images(uned_root):
    ds = uned.UnedDataset(uned_root, "query", domains=("cars", "sop"))
    (uned_root / "images" / "cars" / "car_ims" / "000002.jpg").unlink()
    with pytest.raises(DatasetError, match="000002.jpg"):
        ds[1]
    assert any("1 of 3 images" in p for p in uned.check_uned(uned_root, expect_full=False))
    _corrupt(uned_root / "images" / "sop" / "bicycle_final" / "111085122871_0.JPG")
    with pytest.raises(DatasetError, match="111085122871_0.JPG"):
        ds[3]
    shutil.rmtree(uned_root / "images")
    with pytest.raises(DatasetError, match=str(uned_root / "images")):
        uned.UnedDataset(uned_root, "query")


# ----------------------------------------------------------------------------------------------- captions


@pytest.mark.parametrize("layout", ["2014", "2017"])
def test_coco_karpathy_splits_and_captions(tmp_path, layout):
    root = write_coco_karpathy(tmp_path / "coco", image_layout=layout)
    test = cap.CocoKarpathy(root, "test")
    assert [test[i]["id"] for i in range(len(test))] == ["391895", "522418"]
    assert test.info.extra["image_layout"] == layout
    captions = test.captions()
    assert captions[0] == list(COCO_IMAGES[1][3]) and len(captions[1]) == 6  # all 6 captions kept
    assert captions[1][1] == "A woman cutting a large white sheet cake."  # whitespace stripped
    assert test.info.extra["num_captions"] == 11 and test.info.extra["captions_per_image"] == {5: 1, 6: 1}
    sample = test[1]
    assert sample["captions"] == captions[1] and sample["image"].shape == (36, 48, 3)
    assert _close(sample["image"], image_colour("522418"))
    train = cap.CocoKarpathy(root, "train")  # Karpathy train + restval, file order
    assert [train[i]["id"] for i in range(len(train))] == ["318556", "116100"]
    assert [cap.CocoKarpathy(root, "val")[0]["id"]] == ["184613"]
    assert cap.check_coco(root, expect_full=False) == []


def test_coco_errors(tmp_path):
    root = write_coco_karpathy(tmp_path / "coco")
    assert any("expected 5,000" in p for p in cap.check_coco(root))
    _corrupt(root / "val2014" / "COCO_val2014_000000391895.jpg")
    with pytest.raises(DatasetError, match="COCO_val2014_000000391895.jpg"):
        cap.CocoKarpathy(root, "test")[0]
    shutil.rmtree(root / "train2014")
    with pytest.raises(DatasetError, match=str(root / "train2014")):
        cap.CocoKarpathy(root, "train")
    cap.CocoKarpathy(root, "test")  # the test split only needs val2014
    (root / "dataset_coco.json").unlink()
    assert any(str(root / "dataset_coco.json") in p for p in cap.check_coco(root, expect_full=False))
    with pytest.raises(DatasetError, match=str(root / "dataset_coco.json")):
        cap.CocoKarpathy(root, "test")
    (root / "dataset_coco.json").write_text('{"images": [')
    with pytest.raises(DatasetError, match="not valid JSON"):
        cap.CocoKarpathy(root, "test")
    with pytest.raises(DatasetError, match="unknown coco_captions split"):
        cap.CocoKarpathy(root, "restval")


def test_flickr30k_karpathy(tmp_path):
    root = write_flickr30k_karpathy(tmp_path / "flickr")
    test = cap.Flickr30kKarpathy(root, "test")
    assert [test[i]["id"] for i in range(len(test))] == ["1007129816", "1009434119"]
    assert test[1]["captions"][2] == "A Boston terrier is running in the grass, near a fence, on a sunny day."
    assert all(len(c) == 5 for c in test.captions())
    assert _close(test[0]["image"], image_colour("1007129816"))
    assert [cap.Flickr30kKarpathy(root, s)[0]["id"] for s in ("train", "val")] == ["1000092795", "1018148011"]
    assert cap.check_flickr30k(root, expect_full=False) == []
    (root / "flickr30k-images" / "1009434119.jpg").unlink()
    assert any("1 of 2 test images are missing" in p for p in cap.check_flickr30k(root, expect_full=False))
    with pytest.raises(DatasetError, match="1009434119.jpg"):
        test[1]
    shutil.rmtree(root / "flickr30k-images")
    with pytest.raises(DatasetError, match=str(root / "flickr30k-images")):
        cap.Flickr30kKarpathy(root, "test")


def test_docci(tmp_path):
    root = write_docci(tmp_path / "docci")
    test = cap.Docci(root, "test")
    assert [test[i]["id"] for i in range(len(test))] == ["test_00001", "test_00002"]
    assert test[1]["captions"] == [
        "An outdoor view of a yellow fire hydrant beside a gray sidewalk, with a café sign."
    ]
    assert test[0]["image"].shape == (48, 32, 3) and _close(test[0]["image"], image_colour("test_00001"))
    assert len(cap.Docci(root, "train")) == 1 and len(cap.Docci(root, "qual_dev")) == 1
    assert len(cap.Docci(root, "qual_test")) == 0
    assert cap.check_docci(root, expect_full=False) == []
    assert any("expected 5,000" in p for p in cap.check_docci(root))
    _corrupt(root / "images" / "test_00002.jpg")
    with pytest.raises(DatasetError, match="test_00002.jpg"):
        test[1]
    lines = (root / "docci_descriptions.jsonlines").read_text().splitlines()
    (root / "docci_descriptions.jsonlines").write_text("\n".join([lines[0], "{oops", *lines[1:]]))
    with pytest.raises(DatasetError, match="line 2"):
        cap.Docci(root, "test")
    (root / "docci_descriptions.jsonlines").write_text("\n".join(lines))
    shutil.rmtree(root / "images")
    assert any(str(root / "images") in p for p in cap.check_docci(root, expect_full=False))
    (root / "docci_descriptions.jsonlines").unlink()
    with pytest.raises(DatasetError, match="docci_descriptions.jsonlines"):
        cap.Docci(root, "test")


# ----------------------------------------------------------------------------------------------- registry


def test_registry_entries(tmp_path):
    roots = {
        "imagenet": (write_imagenet(tmp_path / "i"), "val", 3),
        "uned": (write_uned(tmp_path / "u"), "index", 17),
        "coco_captions": (write_coco_karpathy(tmp_path / "c"), "test", 2),
        "flickr30k_captions": (write_flickr30k_karpathy(tmp_path / "f"), "test", 2),
        "docci": (write_docci(tmp_path / "d"), "test", 2),
    }
    entries = registered_datasets()
    for name, (root, split, size) in roots.items():
        entry = entries[name]
        assert split in entry.splits and entry.default_dirname and entry.how_to_get and entry.licence
        ds = entry.open(root, split)
        assert (ds.name, ds.split, len(ds)) == (name, split, size)
        assert ds.info.name == name and ds.info.split == split
        assert entry.check(root)  # full-release counts are not met by a fixture
        assert str(tmp_path / "nowhere") in entry.check(tmp_path / "nowhere")[0]
