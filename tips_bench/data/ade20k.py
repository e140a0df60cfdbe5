"""ADE20K scene parsing benchmark (ADEChallengeData2016, SceneParsing-150).

Layout (``root`` = ``ADEChallengeData2016`` or the folder holding it)::

    ADEChallengeData2016/images/{training,validation}/ADE_{train,val}_XXXXXXXX.jpg
    ADEChallengeData2016/annotations/{training,validation}/ADE_{train,val}_XXXXXXXX.png   8-bit, 0..150
    ADEChallengeData2016/objectInfo150.txt      optional here: Idx, Ratio, Train, Val, Name (tab-separated)

Labels are remapped as mmseg's ``reduce_zero_label``: 0 ("other objects") → 255, x → x − 1, giving
classes 0..149 in objectInfo150 order.
"""

from __future__ import annotations

from pathlib import Path

from tips_bench.data.base import DatasetInfo, Sample, read_rgb, register_loader, require_path
from tips_bench.data.voc import count_problem, list_stems, read_index_png, reduce_zero_label, require_members
from tips_bench.errors import DatasetError

ADE20K_CLASSES: tuple[str, ...] = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass",
    "cabinet", "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain", "chair",
    "car", "water", "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field",
    "armchair", "seat", "fence", "desk", "rock", "wardrobe", "lamp", "bathtub", "railing", "cushion",
    "base", "box", "column", "signboard", "chest of drawers", "counter", "sand", "sink", "skyscraper",
    "fireplace", "refrigerator", "grandstand", "path", "stairs", "runway", "case", "pool table", "pillow",
    "screen door", "stairway", "river", "bridge", "bookcase", "blind", "coffee table", "toilet", "flower",
    "book", "hill", "bench", "countertop", "stove", "palm", "kitchen island", "computer", "swivel chair",
    "boat", "bar", "arcade machine", "hovel", "bus", "towel", "light", "truck", "tower", "chandelier",
    "awning", "streetlight", "booth", "television receiver", "airplane", "dirt track", "apparel", "pole",
    "land", "bannister", "escalator", "ottoman", "bottle", "buffet", "poster", "stage", "van", "ship",
    "fountain", "conveyer belt", "canopy", "washer", "plaything", "swimming pool", "stool", "barrel",
    "basket", "waterfall", "tent", "bag", "minibike", "cradle", "oven", "ball", "food", "step", "tank",
    "trade name", "microwave", "pot", "animal", "bicycle", "lake", "dishwasher", "screen", "blanket",
    "sculpture", "hood", "sconce", "vase", "traffic light", "tray", "ashcan", "fan", "pier", "crt screen",
    "plate", "monitor", "bulletin board", "shower", "radiator", "glass", "clock", "flag",
)
"""The 150 class names after the remap (index 0 = objectInfo150 row 1), as in mmseg's ``ADE20KDataset``
(the trailing space of mmseg's ``'bed '`` removed). Each is the first synonym of objectInfo150's Name
column, except 89 ``television receiver`` (objectInfo150: ``television, television receiver, ...``)."""

ADE20K_SPLIT_SIZES: dict[str, int] = {"training": 20210, "validation": 2000}
ADE20K_SPLIT_ALIASES: dict[str, str] = {"train": "training", "val": "validation"}

ADE20K_URL = "http://data.csail.mit.edu/places/ADEchallenge/ADEChallengeData2016.zip"
_HOW_TO_GET = f"download {ADE20K_URL} and unzip it so that ADEChallengeData2016/images exists under the root"


def resolve_ade_dir(root: Path) -> Path:
    """``ADEChallengeData2016`` given itself or the folder holding it."""
    for candidate in (root, root / "ADEChallengeData2016"):
        if (candidate / "images").is_dir() and (candidate / "annotations").is_dir():
            return candidate
    raise DatasetError(
        f"ADE20K not found at {root / 'ADEChallengeData2016'} (nor at {root} itself: no images/ and "
        f"annotations/ folders); {_HOW_TO_GET}"
    )


def read_object_info(path: Path) -> tuple[str, ...]:
    """The 150 Name fields of ``objectInfo150.txt`` (full synonym strings, stripped), in Idx order."""
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    rows = [line.split("\t") for line in lines[1:]]
    try:
        names = {int(row[0].strip()): row[-1].strip() for row in rows}
    except (ValueError, IndexError) as exc:
        raise DatasetError(f"malformed {path} ({exc}); re-extract it from {ADE20K_URL}") from exc
    if not lines or not lines[0].startswith("Idx") or sorted(names) != list(range(1, 151)):
        raise DatasetError(
            f"malformed {path}: expected a header and rows Idx 1..150; re-extract it from {ADE20K_URL}"
        )
    return tuple(names[i] for i in range(1, 151))


class ADE20KDataset:
    """ADE20K SceneParsing-150; ``split`` in training, validation (aliases train, val)."""

    name = "ade20k"
    splits = ("training", "validation")

    def __init__(self, root: Path | str, split: str):
        canonical = ADE20K_SPLIT_ALIASES.get(split, split)
        if canonical not in self.splits:
            raise DatasetError(
                f"unknown ADE20K split {split!r}; choose one of training, validation, train, val"
            )
        self.root = Path(root)
        self.split = canonical
        self.base = resolve_ade_dir(self.root)
        image_dir = require_path(self.base / "images" / canonical, "ADE20K image folder", _HOW_TO_GET)
        label_dir = require_path(
            self.base / "annotations" / canonical, "ADE20K annotation folder", _HOW_TO_GET
        )
        ids = sorted(list_stems(image_dir, ".jpg"))
        if not ids:
            raise DatasetError(f"no .jpg images in {image_dir}; {_HOW_TO_GET}")
        require_members(ids, list_stems(label_dir, ".png"), label_dir, ".png", _HOW_TO_GET)
        info_path = self.base / "objectInfo150.txt"
        object_info = read_object_info(info_path) if info_path.is_file() else ()

        self._image_dir = image_dir
        self._label_dir = label_dir
        self._ids = ids
        self.info = DatasetInfo(
            name=self.name,
            split=canonical,
            num_classes=len(ADE20K_CLASSES),
            class_names=ADE20K_CLASSES,
            notes="ADE20K reduce_zero_label: 0 (other objects) -> 255 ignored, x -> x-1; 150 classes.",
            extra={"prompt_names": ADE20K_CLASSES, "object_info_names": object_info},
        )

    def __len__(self) -> int:
        return len(self._ids)

    def __getitem__(self, index: int) -> Sample:
        image_id = self._ids[index]
        image = read_rgb(self._image_dir / f"{image_id}.jpg")
        label_path = self._label_dir / f"{image_id}.png"
        label = read_index_png(label_path)
        if label.shape != image.shape[:2]:
            raise DatasetError(f"label {label_path} is {label.shape} but its image is {image.shape[:2]}")
        return {"id": image_id, "image": image, "seg": reduce_zero_label(label)}


def check_ade20k(root: Path | str, expect_full: bool | None = None) -> list[str]:
    """Problems with an ADE20K root (empty = OK); ``expect_full``: see :func:`.voc.count_problem`."""
    root = Path(root)
    try:
        base = resolve_ade_dir(root)
    except DatasetError as exc:
        return [str(exc)]
    problems: list[str] = []
    for split, expected in ADE20K_SPLIT_SIZES.items():
        try:
            found = len(ADE20KDataset(root, split))
            problems += count_problem(f"ADE20K {split}", found, expected, expect_full)
        except DatasetError as exc:
            problems.append(str(exc))
    for split in ADE20K_SPLIT_SIZES:
        label_dir, image_dir = base / "annotations" / split, base / "images" / split
        if label_dir.is_dir() and image_dir.is_dir():
            extra = sorted(list_stems(label_dir, ".png") - list_stems(image_dir, ".jpg"))
            if extra:
                first = label_dir / f"{extra[0]}.png"
                problems.append(f"{len(extra)} ADE20K annotation(s) without an image, first {first}")
    return list(dict.fromkeys(problems))


register_loader(
    ADE20KDataset,
    name="ade20k",
    description="ADE20K SceneParsing-150 (ADEChallengeData2016): validation 2,000, training 20,210.",
    default_dirname="ADEChallengeData2016",
    homepage="http://sceneparsing.csail.mit.edu/",
    licence="research and educational use (ADE20K terms of use; images from various sources)",
    check=check_ade20k,
    how_to_get=f"Download {ADE20K_URL} and unzip it into the data folder (creates ADEChallengeData2016).",
)
