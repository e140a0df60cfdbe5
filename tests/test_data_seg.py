"""Segmentation datasets (VOC 2012, ADE20K, PASCAL-Context) read from tiny official-layout fixtures."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
from fixture_writers.ade20k import ADE20K_FIXTURE_VALUES, write_ade20k
from fixture_writers.pascal_context import PASCAL_CONTEXT_FIXTURE_VALUES, write_pascal_context
from fixture_writers.voc import (
    VOC_FIXTURE_AUG,
    VOC_FIXTURE_CLASSES,
    VOC_FIXTURE_TRAIN,
    VOC_FIXTURE_VAL,
    write_voc,
)
from PIL import Image

from tips_bench.data.ade20k import ADE20K_CLASSES, ADE20KDataset, check_ade20k
from tips_bench.data.base import IGNORE_INDEX, registered_datasets
from tips_bench.data.pascal_context import (
    PASCAL_CONTEXT_59_CLASSES,
    PASCAL_CONTEXT_60_CLASSES,
    PASCAL_CONTEXT_459_IDS,
    PascalContext59Dataset,
    PascalContext60Dataset,
    PascalContextDataset,
    check_pascal_context,
)
from tips_bench.data.voc import VOC_CLASSES, VOCSegDataset, check_voc, count_problem
from tips_bench.errors import DatasetError


def _garbage(path: Path) -> None:
    path.write_bytes(b"this is not an image at all")


# --------------------------------------------------------------------------------------------- VOC


@pytest.fixture(scope="module")
def voc_png(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_voc(tmp_path_factory.mktemp("voc_png"), aug="png")


@pytest.fixture(scope="module")
def voc_mat(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_voc(tmp_path_factory.mktemp("voc_mat"), aug="mat")


def _check_voc_item(sample: dict, image_id: str, cls: int, void: bool) -> None:
    assert sample["id"] == image_id
    assert sample["image"].dtype == np.uint8 and sample["image"].shape == (32, 48, 3)
    seg = sample["seg"]
    assert seg.dtype == np.int64 and seg.shape == (32, 48)
    # block [8:24, 12:36] = cls (16 x 24 = 384 px), void column [8:24, 11] (16 px) in VOC labels only
    assert seg[0, 0] == 0 and seg[16, 20] == cls and seg[16, 11] == (255 if void else 0)
    assert (seg == cls).sum() == 384
    assert (seg == IGNORE_INDEX).sum() == (16 if void else 0)
    assert set(np.unique(seg)) == ({0, cls, 255} if void else {0, cls})


def test_voc_train_val_labels_and_info(voc_png: Path) -> None:
    for split, ids in (("train", VOC_FIXTURE_TRAIN), ("val", VOC_FIXTURE_VAL)):
        ds = VOCSegDataset(voc_png, split)
        assert len(ds) == 2 and ds.split == split and ds.name == "voc"
        for i, image_id in enumerate(ids):  # split-file order
            _check_voc_item(ds[i], image_id, VOC_FIXTURE_CLASSES[image_id], void=True)
    ds = VOCSegDataset(voc_png, "trainval")
    assert [ds[i]["id"] for i in range(len(ds))] == sorted(VOC_FIXTURE_TRAIN + VOC_FIXTURE_VAL)
    info = ds.info
    assert info.num_classes == 21 and info.ignore_index == 255 and info.class_names == VOC_CLASSES
    assert info.class_names[11] == "diningtable" and info.class_names[20] == "tvmonitor"
    prompts = info.extra["prompt_names"]
    assert (prompts[0], prompts[11], prompts[16], prompts[20]) == (
        "background", "dining table", "potted plant", "tv monitor"
    )


@pytest.mark.parametrize("mode", ["png", "mat"])
def test_voc_trainaug(mode: str, voc_png: Path, voc_mat: Path) -> None:
    root = voc_png if mode == "png" else voc_mat
    ds = VOCSegDataset(root, "trainaug")
    assert ds.info.extra["aug_source"] == ("SegmentationClassAug" if mode == "png" else "SBD cls .mat")
    ids = [ds[i]["id"] for i in range(len(ds))]
    # train (SegmentationClass) + SBD-only ids; SBD's copies of a VOC train and a VOC val id are excluded
    assert ids == sorted(VOC_FIXTURE_TRAIN + VOC_FIXTURE_AUG)
    for i, image_id in enumerate(ids):
        void = image_id in VOC_FIXTURE_TRAIN  # VOC labels come from SegmentationClass (class, not class + 1)
        _check_voc_item(ds[i], image_id, VOC_FIXTURE_CLASSES[image_id], void=void)


def test_voc_root_variants_and_sbd_root(voc_mat: Path, tmp_path: Path) -> None:
    for root in (voc_mat.parent, voc_mat, voc_mat / "VOC2012"):
        assert len(VOCSegDataset(root, "val")) == 2
        assert len(VOCSegDataset(root, "trainaug")) == 4
    # SBD elsewhere: found only through the sbd_root option
    copy = tmp_path / "copy"
    shutil.copytree(voc_mat, copy / "VOCdevkit")
    sbd = tmp_path / "elsewhere" / "sbd"
    sbd.parent.mkdir()
    shutil.move(str(copy / "VOCdevkit" / "VOCaug"), str(sbd))
    with pytest.raises(DatasetError, match="aug.txt"):
        VOCSegDataset(copy, "trainaug")
    assert len(VOCSegDataset(copy, "trainaug", sbd_root=sbd)) == 4
    assert len(VOCSegDataset(copy, "trainaug", sbd_root=sbd / "dataset")) == 4


def test_voc_check_and_missing_paths(voc_png: Path, voc_mat: Path, tmp_path: Path) -> None:
    assert check_voc(voc_png) == [] and check_voc(voc_mat) == []
    root = write_voc(tmp_path, aug="none")
    assert check_voc(root) == []
    with pytest.raises(DatasetError, match="aug.txt"):
        VOCSegDataset(root, "trainaug")
    voc = root / "VOC2012"
    missing_label = voc / "SegmentationClass" / "2007_000042.png"
    missing_label.unlink()
    problems = check_voc(root)
    assert len(problems) == 1 and str(missing_label) in problems[0]
    with pytest.raises(DatasetError, match=str(missing_label)):
        VOCSegDataset(root, "val")
    assert len(VOCSegDataset(root, "train")) == 2
    (voc / "ImageSets" / "Segmentation" / "val.txt").unlink()
    with pytest.raises(DatasetError, match=str(voc / "ImageSets" / "Segmentation" / "val.txt")):
        VOCSegDataset(root, "val")
    shutil.rmtree(voc / "SegmentationClass")
    with pytest.raises(DatasetError, match=str(voc / "SegmentationClass")):
        VOCSegDataset(root, "train")
    assert any(str(voc / "SegmentationClass") in p for p in check_voc(root))
    nothing = tmp_path / "empty"
    nothing.mkdir()
    with pytest.raises(DatasetError, match=str(nothing / "VOCdevkit" / "VOC2012")):
        VOCSegDataset(nothing, "val")
    assert str(nothing / "VOCdevkit" / "VOC2012") in check_voc(nothing)[0]
    with pytest.raises(DatasetError, match="unknown VOC split"):
        VOCSegDataset(voc_png, "test")


def test_voc_corrupt_files(tmp_path: Path) -> None:
    root = write_voc(tmp_path, aug="mat")
    voc = root / "VOC2012"
    _garbage(voc / "JPEGImages" / "2007_000033.jpg")
    ds = VOCSegDataset(root, "val")
    with pytest.raises(DatasetError, match="2007_000033.jpg"):
        ds[0]
    _garbage(voc / "SegmentationClass" / "2007_000042.png")
    with pytest.raises(DatasetError, match="2007_000042.png"):
        ds[1]
    Image.new("RGB", (48, 32)).save(voc / "SegmentationClass" / "2007_000032.png")  # colour, not indices
    with pytest.raises(DatasetError, match="mode RGB"):
        VOCSegDataset(root, "train")[0]
    _garbage(root / "VOCaug" / "dataset" / "cls" / "2008_000002.mat")
    aug = VOCSegDataset(root, "trainaug")
    with pytest.raises(DatasetError, match="2008_000002.mat"):
        aug[2]  # sorted trainaug: 2007_000032, 2007_000039, 2008_000002, 2008_000003


def test_count_problem_rules() -> None:
    assert count_problem("x", 1449, 1449) == []
    assert count_problem("x", 3, 1449) == []  # tiny subset (fixture) accepted in auto mode
    assert count_problem("x", 1000, 1449) == ["x: found 1,000 items, the full release has 1,449"]
    assert count_problem("x", 3, 1449, expect_full=True) != []
    assert count_problem("x", 1000, 1449, expect_full=False) == []


# ------------------------------------------------------------------------------------------ ADE20K


@pytest.fixture(scope="module")
def ade(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_ade20k(tmp_path_factory.mktemp("ade"))


def test_ade20k_splits_aliases_and_remap(ade: Path) -> None:
    for split, alias in (("training", "train"), ("validation", "val")):
        values = ADE20K_FIXTURE_VALUES[split]
        for name in (split, alias):
            for root in (ade, ade.parent):
                ds = ADE20KDataset(root, name)
                assert ds.split == split and ds.info.split == split and len(ds) == len(values)
        for i, (image_id, value) in enumerate(sorted(values.items())):
            sample = ds[i]
            assert sample["id"] == image_id and sample["image"].shape == (32, 48, 3)
            seg = sample["seg"]
            assert seg.dtype == np.int64 and seg.shape == (32, 48)
            # raw quadrants 0 | 1 / 150 | value  ->  255 | 0 / 149 | value - 1
            assert (seg[0, 0], seg[0, 30], seg[20, 0], seg[20, 30]) == (255, 0, 149, value - 1)
            assert (seg == 255).sum() == 16 * 24
    info = ADE20KDataset(ade, "val").info
    assert info.num_classes == 150 and info.class_names == ADE20K_CLASSES and len(set(ADE20K_CLASSES)) == 150
    assert info.class_names[12] == "person" and info.class_names[89] == "television receiver"
    assert info.class_names[7] == "bed" and info.class_names[149] == "flag"
    full = info.extra["object_info_names"]
    assert len(full) == 150 and full[1] == "building, edifice" and full[7] == "bed" and full[21] == "water"


def test_ade20k_object_info_optional_and_malformed(tmp_path: Path) -> None:
    root = write_ade20k(tmp_path, object_info=False)
    assert ADE20KDataset(root, "val").info.extra["object_info_names"] == ()
    assert ADE20KDataset(root, "val").info.class_names == ADE20K_CLASSES
    assert check_ade20k(root) == []
    info_path = root / "objectInfo150.txt"
    info_path.write_text("Idx\tRatio\tTrain\tVal\tName\n1\t0.1\t1\t1\twall\n")
    with pytest.raises(DatasetError, match=str(info_path)):
        ADE20KDataset(root, "val")
    problems = check_ade20k(root)
    assert len(problems) == 1 and str(info_path) in problems[0]


def test_ade20k_check_missing_and_corrupt(ade: Path, tmp_path: Path) -> None:
    assert check_ade20k(ade) == [] and check_ade20k(ade.parent) == []
    root = write_ade20k(tmp_path)
    label = root / "annotations" / "validation" / "ADE_val_00000002.png"
    label.unlink()
    with pytest.raises(DatasetError, match=str(label)):
        ADE20KDataset(root, "validation")
    assert any(str(label) in p for p in check_ade20k(root))
    image = root / "images" / "training" / "ADE_train_00000002.jpg"
    _garbage(image)
    with pytest.raises(DatasetError, match=str(image)):
        ADE20KDataset(root, "training")[1]
    shutil.rmtree(root / "annotations" / "training")
    with pytest.raises(DatasetError, match=str(root / "annotations" / "training")):
        ADE20KDataset(root, "training")
    empty = tmp_path / "nothing"
    empty.mkdir()
    with pytest.raises(DatasetError, match=str(empty / "ADEChallengeData2016")):
        ADE20KDataset(empty, "val")
    with pytest.raises(DatasetError, match="unknown ADE20K split"):
        ADE20KDataset(ade, "test")


# ---------------------------------------------------------------------------------- PASCAL-Context


@pytest.fixture(scope="module")
def pcontext(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_pascal_context(tmp_path_factory.mktemp("pc"))


def test_pascal_context_59_and_60(pcontext: Path) -> None:
    for split, values in PASCAL_CONTEXT_FIXTURE_VALUES.items():
        ds59, ds60 = PascalContext59Dataset(pcontext, split), PascalContext60Dataset(pcontext, split)
        assert len(ds59) == len(ds60) == len(values)
        for i, (image_id, value) in enumerate(sorted(values.items())):
            s59, s60 = ds59[i], ds60[i]
            assert s59["id"] == s60["id"] == image_id and s60["image"].shape == (32, 48, 3)
            assert s59["seg"].dtype == s60["seg"].dtype == np.int64
            # raw quadrants 0 | 1 / 59 | value
            corners = (0, 0), (0, 30), (20, 0), (20, 30)
            assert [s60["seg"][c] for c in corners] == [0, 1, 59, value]
            assert [s59["seg"][c] for c in corners] == [255, 0, 58, value - 1]
            assert PASCAL_CONTEXT_60_CLASSES[value] == PASCAL_CONTEXT_59_CLASSES[value - 1]
    i59, i60 = ds59.info, ds60.info
    assert (i59.name, i59.num_classes) == ("pascal_context59", 59)
    assert (i60.name, i60.num_classes) == ("pascal_context60", 60)
    assert i60.class_names[0] == "background" and i60.class_names[37] == "person"
    assert i59.class_names[0] == "aeroplane" and i59.class_names[58] == "wood"
    assert len(set(i59.class_names)) == 59
    assert i60.extra["prompt_names"][55] == "tv monitor" and i59.extra["prompt_names"][39] == "potted plant"
    assert len(PASCAL_CONTEXT_459_IDS) == 60
    assert list(PASCAL_CONTEXT_459_IDS) == sorted(PASCAL_CONTEXT_459_IDS)
    for root in (pcontext.parent, pcontext / "VOC2010"):
        assert len(PascalContext59Dataset(root, "val")) == 3


def test_pascal_context_check_missing_and_corrupt(pcontext: Path, tmp_path: Path) -> None:
    assert check_pascal_context(pcontext) == []
    root = write_pascal_context(tmp_path)
    voc = root / "VOC2010"
    _garbage(voc / "SegmentationClassContext" / "2008_000008.png")
    with pytest.raises(DatasetError, match="2008_000008.png"):
        PascalContext60Dataset(root, "val")[1]
    _garbage(voc / "JPEGImages" / "2008_000002.jpg")
    with pytest.raises(DatasetError, match="2008_000002.jpg"):
        PascalContext59Dataset(root, "train")[0]
    split_file = voc / "ImageSets" / "SegmentationContext" / "val.txt"
    split_file.unlink()
    with pytest.raises(DatasetError, match=str(split_file)):
        PascalContext59Dataset(root, "val")
    assert any(str(split_file) in p for p in check_pascal_context(root))
    shutil.rmtree(voc / "SegmentationClassContext")
    with pytest.raises(DatasetError, match=str(voc / "SegmentationClassContext")):
        PascalContext60Dataset(root, "train")
    with pytest.raises(DatasetError, match="59 or 60"):
        PascalContextDataset(pcontext, "val", num_classes=61)


# -------------------------------------------------------------------------------------- registry


def test_registry_entries_open_and_pickle(voc_png: Path, ade: Path, pcontext: Path) -> None:
    entries = registered_datasets()
    cases = {
        "voc": (voc_png, "val", "VOCdevkit"),
        "ade20k": (ade, "validation", "ADEChallengeData2016"),
        "pascal_context59": (pcontext, "val", "VOCdevkit"),
        "pascal_context60": (pcontext, "val", "VOCdevkit"),
    }
    for name, (root, split, dirname) in cases.items():
        entry = entries[name]
        assert entry.default_dirname == dirname and split in entry.splits and entry.how_to_get
        ds = entry.open(root, split)
        assert ds.info.name == name and ds.name == name
        assert entry.check(root) == []
        assert entry.check(root.parent / "does-not-exist") != []
        clone = pickle.loads(pickle.dumps(ds))
        np.testing.assert_array_equal(clone[0]["seg"], ds[0]["seg"])
