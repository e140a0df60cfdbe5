"""Image-text retrieval sets: COCO and Flickr30k (Karpathy splits) and DOCCI.

COCO (``coco_captions``), root layout::

    dataset_coco.json              Karpathy's caption_datasets.zip (or caption_datasets/dataset_coco.json)
    val2014/COCO_val2014_%012d.jpg train2014/COCO_train2014_%012d.jpg      (or COCO-2017 train2017/, val2017/)

Flickr30k (``flickr30k_captions``)::

    dataset_flickr30k.json         Karpathy's caption_datasets.zip (or in caption_datasets/)
    flickr30k-images/<flickr id>.jpg

DOCCI (``docci``)::

    docci_descriptions.jsonlines   one {example_id, split, image_file, description} per line
    images/<image_file>            docci_images.tar.gz

Karpathy splits: ``test`` (COCO 5,000 images, Flickr30k 1,000), ``val``, and ``train`` = Karpathy
``train`` + ``restval`` (the customary merge). Every caption of an image is kept, in file order,
stripped of surrounding whitespace: most COCO images have 5, a few have 6 or 7 (all are scored, as in
CLIP_benchmark and BLIP). DOCCI has one long description per image. Items keep the annotation file's
order. Samples: ``id``, ``image``, ``captions``.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from tips_bench.data.base import DatasetInfo, Sample, read_rgb, register_loader, sentence
from tips_bench.data.jsonfiles import read_json, read_jsonlines
from tips_bench.errors import DatasetError

KARPATHY_SPLITS = ("train", "val", "test")
# Requested split -> Karpathy "split" values it contains.
KARPATHY_SPLIT_VALUES = {"train": ("train", "restval"), "val": ("val",), "test": ("test",)}
DOCCI_SPLITS = ("train", "test", "qual_dev", "qual_test")

EXPECTED = {
    "coco_captions": {"train": 113_287, "val": 5_000, "test": 5_000},
    "flickr30k_captions": {"train": 29_000, "val": 1_014, "test": 1_000},
    "docci": {"train": 9_647, "test": 5_000, "qual_dev": 100, "qual_test": 100},
}

KARPATHY_URL = "https://cs.stanford.edu/people/karpathy/deepimagesent/caption_datasets.zip"
HOW_TO_GET = {
    "coco_captions": (
        "download val2014.zip (and train2014.zip for the train split) from https://cocodataset.org/#download"
        f" and {KARPATHY_URL}, and unpack them into <root>/ (val2014/, train2014/, dataset_coco.json)"
    ),
    "flickr30k_captions": (
        "request flickr30k-images.tar.gz via https://shannon.cs.illinois.edu/DenotationGraph/ and unpack"
        f" it into <root>/ (flickr30k-images/), with dataset_flickr30k.json from {KARPATHY_URL} in <root>/"
    ),
    "docci": (
        "download https://storage.googleapis.com/docci/data/docci_descriptions.jsonlines and"
        " docci_images.tar.gz into <root>/ and unpack the tarball there (giving images/)"
    ),
}
COCO_2017_DIRS = ("val2017", "train2017")
FLICKR_IMAGE_DIRS = ("flickr30k-images", "flickr30k_images")


class CaptionDataset:
    """Images with their captions; subclasses fill ``_items`` = [(id, image candidates, captions)]."""

    name = ""
    splits: tuple[str, ...] = ()

    def __init__(self, root: Path | str, split: str):
        if split not in self.splits:
            raise DatasetError(f"unknown {self.name} split {split!r}; choose one of {', '.join(self.splits)}")
        self.root = Path(root)
        if not self.root.is_dir():
            raise DatasetError(f"{self.name} root not found at {self.root}; {HOW_TO_GET[self.name]}")
        self.split = split
        self._items: list[tuple[str, tuple[Path, ...], tuple[str, ...]]] = []

    def _finish(self, notes: str, **extra: object) -> None:
        counts = Counter(len(c) for _, _, c in self._items)
        self.info = DatasetInfo(
            name=self.name,
            split=self.split,
            notes=notes,
            extra={
                "num_images": len(self._items),
                "num_captions": sum(len(c) for _, _, c in self._items),
                "captions_per_image": dict(sorted(counts.items())),
                **extra,
            },
        )

    def captions(self) -> list[list[str]]:
        """Captions of every item, without decoding images."""
        return [list(c) for _, _, c in self._items]

    def image_path(self, index: int) -> Path:
        """Where item ``index``'s image is (the first existing candidate; else the first candidate)."""
        candidates = self._items[index][1]
        return next((p for p in candidates if p.exists()), candidates[0])

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, index: int) -> Sample:
        item_id, _, captions = self._items[index]
        path = self.image_path(index)
        if not path.exists():
            raise DatasetError(f"{self.name} image {path} not found; {HOW_TO_GET[self.name]}")
        return {"id": item_id, "image": read_rgb(path), "captions": list(captions)}


def _find_annotation(root: Path, file: str, name: str) -> Path:
    for path in (root / file, root / "caption_datasets" / file):
        if path.is_file():
            return path
    raise DatasetError(f"{name} split file not found at {root / file}; {HOW_TO_GET[name]}")


def _karpathy_images(path: Path, name: str, split: str) -> list[tuple[dict, tuple[str, ...]]]:
    """(record, captions) of the Karpathy images in ``split`` (train includes restval), in file order."""
    data = read_json(path, f"{name} Karpathy split file", HOW_TO_GET[name])
    images = data.get("images") if isinstance(data, dict) else None
    if not isinstance(images, list):
        raise DatasetError(
            f"{path} has no 'images' list; it is not a Karpathy split file; {HOW_TO_GET[name]}"
        )
    wanted = KARPATHY_SPLIT_VALUES[split]
    out = []
    for i, image in enumerate(images):
        if not isinstance(image, dict) or not isinstance(image.get("filename"), str) or "split" not in image:
            raise DatasetError(
                f"image record {i} of {path} lacks 'filename' or 'split'; re-download {KARPATHY_URL}"
            )
        if image["split"] not in wanted:
            continue
        sentences = image.get("sentences")
        if not isinstance(sentences, list) or not all(
            isinstance(s, dict) and isinstance(s.get("raw"), str) for s in sentences
        ):
            raise DatasetError(
                f"image {image['filename']} in {path} has no list of sentences with 'raw' captions"
            )
        captions = tuple(s["raw"].strip() for s in sentences if s["raw"].strip())
        if not captions:
            raise DatasetError(
                f"image {image['filename']} in {path} has no caption; re-download {KARPATHY_URL}"
            )
        out.append((image, captions))
    return out


class CocoKarpathy(CaptionDataset):
    """COCO Captions on Karpathy's splits (test = 5,000 val2014 images); ``id`` = COCO image id."""

    name = "coco_captions"
    splits = KARPATHY_SPLITS

    def __init__(self, root: Path | str, split: str = "test"):
        super().__init__(root, split)
        annotation = _find_annotation(self.root, "dataset_coco.json", self.name)
        images = _karpathy_images(annotation, self.name, split)
        folders = sorted({str(image.get("filepath", "")) for image, _ in images})
        missing = [f for f in folders if not (self.root / f).is_dir()]
        if not missing:
            layout = "2014"
        elif any((self.root / d).is_dir() for d in COCO_2017_DIRS):
            layout = "2017"
        else:
            raise DatasetError(
                f"COCO image folder not found at {self.root / missing[0]}; {HOW_TO_GET[self.name]}"
            )
        for image, captions in images:
            if not isinstance(image.get("cocoid"), int) or not isinstance(image.get("filepath"), str):
                raise DatasetError(f"image {image['filename']} in {annotation} lacks 'cocoid' or 'filepath'")
            cocoid = image["cocoid"]
            if layout == "2014":
                candidates: tuple[Path, ...] = (self.root / image["filepath"] / image["filename"],)
            else:
                candidates = tuple(self.root / d / f"{cocoid:012d}.jpg" for d in COCO_2017_DIRS)
            self._items.append((str(cocoid), candidates, captions))
        self._finish(
            f"Karpathy {split} split"
            + (" (train + restval)" if split == "train" else "")
            + "; all captions kept",
            image_layout=layout,
            annotation=str(annotation),
        )


class Flickr30kKarpathy(CaptionDataset):
    """Flickr30k on Karpathy's splits (test = 1,000 images x 5 captions); ``id`` = Flickr photo id."""

    name = "flickr30k_captions"
    splits = KARPATHY_SPLITS

    def __init__(self, root: Path | str, split: str = "test"):
        super().__init__(root, split)
        annotation = _find_annotation(self.root, "dataset_flickr30k.json", self.name)
        folder = next((self.root / d for d in FLICKR_IMAGE_DIRS if (self.root / d).is_dir()), None)
        if folder is None:
            raise DatasetError(
                f"Flickr30k image folder not found at {self.root / FLICKR_IMAGE_DIRS[0]};"
                f" {HOW_TO_GET[self.name]}"
            )
        for image, captions in _karpathy_images(annotation, self.name, split):
            self._items.append((Path(image["filename"]).stem, (folder / image["filename"],), captions))
        self._finish(
            f"Karpathy {split} split"
            + (" (train + restval)" if split == "train" else "")
            + "; all captions kept",
            image_folder=folder.name,
            annotation=str(annotation),
        )


class Docci(CaptionDataset):
    """DOCCI: one long human description per image; ``id`` = ``example_id`` (e.g. ``test_00001``)."""

    name = "docci"
    splits = DOCCI_SPLITS

    def __init__(self, root: Path | str, split: str = "test"):
        super().__init__(root, split)
        path = self.root / "docci_descriptions.jsonlines"
        records = read_jsonlines(path, "DOCCI descriptions", HOW_TO_GET[self.name])
        images = self.root / "images"
        if not images.is_dir():
            raise DatasetError(f"DOCCI image folder not found at {images}; {HOW_TO_GET[self.name]}")
        for i, record in enumerate(records, start=1):
            keys = ("example_id", "split", "image_file", "description")
            if not isinstance(record, dict) or not all(isinstance(record.get(k), str) for k in keys):
                raise DatasetError(f"line {i} of {path} lacks one of {', '.join(keys)}; re-download the file")
            if record["split"] != split:
                continue
            description = record["description"].strip()
            if not description:
                raise DatasetError(f"line {i} of {path} has an empty description; re-download the file")
            self._items.append((record["example_id"], (images / record["image_file"],), (description,)))
        self._finish(f"DOCCI {split} split; one description per image (long: truncate text consistently)")


# --------------------------------------------------------------------------- checks and registration


def _check(cls: type[CaptionDataset], root: Path | str, expect_full: bool) -> list[str]:
    root = Path(root)
    if not root.is_dir():
        return [f"{cls.name} root not found at {root}; {HOW_TO_GET[cls.name]}"]
    problems: list[str] = []
    for split in cls.splits:
        try:
            dataset = cls(root, split)
        except DatasetError as exc:
            message = str(exc)
            if message not in problems:
                problems.append(message)
            continue
        expected = EXPECTED[cls.name][split]
        if expect_full and len(dataset) != expected:
            problems.append(
                f"found {len(dataset):,} {split} images in {root} ({cls.name}), expected {expected:,}"
            )
        missing = [dataset.image_path(i) for i in range(len(dataset)) if not dataset.image_path(i).exists()]
        if missing:
            problems.append(
                f"{len(missing):,} of {len(dataset):,} {split} images are missing (first: {missing[0]})"
            )
    return problems


def check_coco(root: Path | str, expect_full: bool = True) -> list[str]:
    """Problems with a COCO Karpathy root (empty = OK)."""
    return _check(CocoKarpathy, root, expect_full)


def check_flickr30k(root: Path | str, expect_full: bool = True) -> list[str]:
    """Problems with a Flickr30k Karpathy root (empty = OK)."""
    return _check(Flickr30kKarpathy, root, expect_full)


def check_docci(root: Path | str, expect_full: bool = True) -> list[str]:
    """Problems with a DOCCI root (empty = OK)."""
    return _check(Docci, root, expect_full)


register_loader(
    CocoKarpathy,
    name=CocoKarpathy.name,
    description="COCO Captions, Karpathy 5k test: image-text retrieval (R@1/5/10)",
    default_dirname="coco",
    homepage="https://cocodataset.org",
    licence="annotations CC BY 4.0; images under the Flickr terms of use",
    check=check_coco,
    how_to_get=sentence(HOW_TO_GET["coco_captions"]),
)
register_loader(
    Flickr30kKarpathy,
    name=Flickr30kKarpathy.name,
    description="Flickr30k, Karpathy 1k test: image-text retrieval (R@1/5/10)",
    default_dirname="flickr30k",
    homepage="https://shannon.cs.illinois.edu/DenotationGraph/",
    licence="images under the Flickr terms of use, non-commercial research (access form);"
    " captions per the Flickr30k terms",
    check=check_flickr30k,
    how_to_get=sentence(HOW_TO_GET["flickr30k_captions"]),
)
register_loader(
    Docci,
    name=Docci.name,
    description="DOCCI: detailed-description image-text retrieval (test, 5,000 images)",
    default_dirname="docci",
    homepage="https://google.github.io/docci/",
    licence="CC BY 4.0",
    check=check_docci,
    how_to_get=sentence(HOW_TO_GET["docci"]),
)
