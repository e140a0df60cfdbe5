"""UnED (Universal Embedding Dataset, Ypsilantis et al., ICCV 2023): 8-domain fine-grained retrieval.

Layout under ``root`` (the ``data/`` folder of the official instructions)::

    info_files/<domain>/{train,val,test,index,small_index}.json    (info_files.zip)
        each a JSON list of {"path": <relative to images/>, "class_id": int | [int, ...]}
    images/{cars/car_ims, food2k/Food2k_complete, gldv2/images, inat/iNaturalist/train_val2018,
            deepfashion/inshop/img, met/{MET,test_met,test_noart,test_other}, rp2k/all, sop/...}

Test protocol (nikosips/Universal-Image-Embeddings ``dataset_infos.py``, ``knn_utils.py``): each domain's
``test.json`` holds its queries; its index is ``test.json`` again (cars, sop, inat, food2k, rp2k: the
query is then also in the index and that self-match is dropped) or a separate file (inshop ``index``,
met ``index`` = its train set, gldv2 ``index``). Every query searches the MERGED index of all domains;
a neighbour is correct when it has the query's domain AND one of the query's class ids.

Split ``"query"`` yields the queries of all selected domains, ``"index"`` the merged index, each in
domain order then info-file order. :class:`UnedRetrieval` pairs them and gives the relevance and
self-match bookkeeping.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tips_bench.data.base import DatasetInfo, Sample, read_rgb, register_loader, sentence
from tips_bench.data.jsonfiles import read_json
from tips_bench.errors import DatasetError

NAME = "uned"
SPLITS = ("query", "index")
# Official domain order (DOMAIN_LABELS in universal_embedding/datasets.py).
DOMAINS = ("cars", "sop", "inshop", "inat", "met", "gldv2", "food2k", "rp2k")
QUERY_FILE = "test"
INDEX_FILE = {
    "cars": "test",
    "sop": "test",
    "inshop": "index",
    "inat": "test",
    "met": "index",
    "gldv2": "index",
    "food2k": "test",
    "rp2k": "test",
}
# Image folders of each domain under images/ (official README tree).
IMAGE_DIRS = {
    "cars": "cars/car_ims",
    "sop": "sop",
    "inshop": "deepfashion/inshop/img",
    "inat": "inat/iNaturalist/train_val2018",
    "met": "met",
    "gldv2": "gldv2/images",
    "food2k": "food2k/Food2k_complete",
    "rp2k": "rp2k/all",
}
# Full-release sizes (num_test_examples and the index sizes in dataset_infos.py).
EXPECTED_QUERIES = {
    "cars": 8_131,
    "sop": 60_502,
    "inshop": 14_218,
    "inat": 136_093,
    "met": 1_003,
    "gldv2": 1_129,
    "food2k": 9_979,
    "rp2k": 10_931,
}
EXPECTED_INDEX = {**EXPECTED_QUERIES, "inshop": 12_612, "met": 397_121, "gldv2": 761_757}

HOW_TO_GET = (
    "unpack https://cmp.felk.cvut.cz/univ_emb/info_files.zip into <root>/ (giving info_files/<domain>/*.json)"
    " and put each domain's images under <root>/images/ as linked from https://cmp.felk.cvut.cz/univ_emb/#dataset"
)


def rp2k_escaped(path: str) -> str:
    """The ``#U``-escaped spelling of a non-ASCII RP2K path used by some archive extractions.

    Mirrors the official converter: U+0080..U+00FF -> ``#U00xx``, other BMP characters -> ``#Uxxxx``
    (lower-case hex); ASCII is kept.
    """
    out = []
    for ch in path:
        code = ord(ch)
        if code < 0x80:
            out.append(ch)
        elif code <= 0xFFFF:
            out.append(f"#U{code:04x}")
        else:
            out.append(f"\\\\U{code:08x}")
    return "".join(out)


def _parse_info(path: Path) -> tuple[list[str], list[tuple[int, ...]]]:
    """(paths, class-id tuples) of a UnED info file, validated."""
    data = read_json(path, "UnED info file", f"re-extract info_files.zip; {HOW_TO_GET}")
    if not isinstance(data, list):
        raise DatasetError(f"UnED info file {path} must hold a JSON list of {{path, class_id}} records")
    paths: list[str] = []
    labels: list[tuple[int, ...]] = []
    for i, record in enumerate(data):
        if not isinstance(record, dict) or not isinstance(record.get("path"), str):
            raise DatasetError(
                f"record {i} of UnED info file {path} has no string 'path'; re-extract info_files.zip"
            )
        class_id = record.get("class_id")
        ids = class_id if isinstance(class_id, list) else [class_id]
        if not ids or not all(isinstance(c, int) and not isinstance(c, bool) for c in ids):
            raise DatasetError(
                f"record {i} of UnED info file {path} has class_id {class_id!r},"
                " expected an int or a list of ints"
            )
        paths.append(record["path"])
        labels.append(tuple(ids))
    return paths, labels


def _resolve_domains(domains: tuple[str, ...] | list[str] | str | None) -> tuple[str, ...]:
    if domains is None:
        return DOMAINS
    if isinstance(domains, str):
        domains = [d for d in domains.split(",") if d]
    unknown = [d for d in domains if d not in DOMAINS]
    if unknown or not domains:
        raise DatasetError(f"unknown UnED domain(s) {unknown or domains}; choose from {', '.join(DOMAINS)}")
    return tuple(d for d in DOMAINS if d in domains)


def _info_path(root: Path, domain: str, split: str) -> Path:
    file = QUERY_FILE if split == "query" else INDEX_FILE[domain]
    return root / "info_files" / domain / f"{file}.json"


class UnedDataset:
    """UnED queries (``split="query"``) or the merged index (``split="index"``) of the selected domains.

    Yields ``id`` (path relative to ``images/``), ``image``, ``label`` (the first class id) and ``domain``.
    All class ids of an item are in :attr:`label_sets`.
    """

    def __init__(self, root: Path | str, split: str = "query", *, domains: tuple[str, ...] | None = None):
        if split not in SPLITS:
            raise DatasetError(f"unknown UnED split {split!r}; choose one of {', '.join(SPLITS)}")
        self.root = Path(root)
        if not self.root.is_dir():
            raise DatasetError(f"UnED root not found at {self.root}; {HOW_TO_GET}")
        self._images = self.root / "images"
        if not self._images.is_dir():
            raise DatasetError(f"UnED image folder not found at {self._images}; {HOW_TO_GET}")
        self.name = NAME
        self.split = split
        self.domains = _resolve_domains(domains)
        self._paths: list[str] = []
        self.label_sets: list[tuple[int, ...]] = []
        domain_ids: list[int] = []
        self.slices: dict[str, tuple[int, int]] = {}
        files = {}
        for d, domain in enumerate(self.domains):
            info = _info_path(self.root, domain, split)
            paths, labels = _parse_info(info)
            start = len(self._paths)
            self._paths += paths
            self.label_sets += labels
            domain_ids += [d] * len(paths)
            self.slices[domain] = (start, len(self._paths))
            files[domain] = str(info.relative_to(self.root))
        self.domain_ids = np.array(domain_ids, dtype=np.int64)
        self.info = DatasetInfo(
            name=NAME,
            split=split,
            notes="UnED test protocol: queries = test.json of each domain, merged index of all domains;"
            " hit = same domain and label; self-match dropped where query file == index file",
            extra={
                "domains": self.domains,
                "info_files": files,
                "self_indexed": tuple(d for d in self.domains if INDEX_FILE[d] == QUERY_FILE),
                "counts": {d: b - a for d, (a, b) in self.slices.items()},
            },
        )

    def image_path(self, index: int) -> Path:
        """Where item ``index`` is on disk (RP2K: the ``#U``-escaped name if the plain one is absent)."""
        rel = self._paths[index]
        path = self._images / rel
        if not path.exists() and self.domains[self.domain_ids[index]] == "rp2k":
            escaped = self._images / rp2k_escaped(rel)
            if escaped.exists():
                return escaped
        return path

    def __len__(self) -> int:
        return len(self._paths)

    def __getitem__(self, index: int) -> Sample:
        path = self.image_path(index)
        domain = self.domains[self.domain_ids[index]]
        if not path.exists():
            raise DatasetError(
                f"UnED image {path} (listed in {self.info.extra['info_files'][domain]}) not found;"
                f" download the {domain} images as linked from https://cmp.felk.cvut.cz/univ_emb/#dataset"
            )
        return {
            "id": self._paths[index],
            "image": read_rgb(path),
            "label": int(self.label_sets[index][0]),
            "label_set": np.asarray(self.label_sets[index], dtype=np.int64),
            "domain": domain,
        }


class UnedRetrieval:
    """The UnED test protocol: ``query`` and merged ``index`` datasets plus relevance bookkeeping.

    ``self_index[q]`` is the index position holding query ``q`` itself (domains whose index is their
    test set), else -1: exclude it from q's ranking (UnED's ``throw_1st``). ``relevant(q)`` marks the
    index items with q's domain and one of q's class ids (the self entry included).
    """

    def __init__(self, root: Path | str, domains: tuple[str, ...] | None = None):
        self.query = UnedDataset(root, "query", domains=domains)
        self.index = UnedDataset(root, "index", domains=domains)
        self.domains = self.query.domains
        self.self_index = np.full(len(self.query), -1, dtype=np.int64)
        for domain in self.domains:
            if INDEX_FILE[domain] == QUERY_FILE:
                q0, q1 = self.query.slices[domain]
                i0, _ = self.index.slices[domain]
                self.self_index[q0:q1] = np.arange(i0, i0 + (q1 - q0))
        # First class id of every index item, plus the few items that carry several ids.
        self._index_first = np.array([s[0] for s in self.index.label_sets], dtype=np.int64)
        self._index_multi = [(i, s) for i, s in enumerate(self.index.label_sets) if len(s) > 1]

    def relevant(self, q: int) -> np.ndarray:
        """Boolean mask over the merged index: same domain as query ``q`` and a shared class id."""
        domain = self.domains[self.query.domain_ids[q]]
        labels = self.query.label_sets[q]
        start, stop = self.index.slices[domain]
        mask = np.zeros(len(self.index), dtype=bool)
        mask[start:stop] = np.isin(self._index_first[start:stop], labels)
        for i, ids in self._index_multi:
            if start <= i < stop and set(ids) & set(labels):
                mask[i] = True
        return mask


def check_uned(
    root: Path | str, expect_full: bool = True, domains: tuple[str, ...] | None = None
) -> list[str]:
    """Problems with a UnED root (empty = OK): info files, image folders, missing images, and counts."""
    root = Path(root)
    if not root.is_dir():
        return [f"UnED root not found at {root}; {HOW_TO_GET}"]
    problems: list[str] = []
    images = root / "images"
    if not images.is_dir():
        problems.append(f"UnED image folder not found at {images}; {HOW_TO_GET}")
    if not (root / "info_files").is_dir():
        problems.append(f"UnED info files not found at {root / 'info_files'}; {HOW_TO_GET}")
        return problems
    for domain in _resolve_domains(domains):
        folder = images / IMAGE_DIRS[domain]
        if images.is_dir() and not folder.is_dir():
            problems.append(f"UnED {domain} images not found at {folder}; {HOW_TO_GET}")
        for split, expected in (("query", EXPECTED_QUERIES), ("index", EXPECTED_INDEX)):
            info = _info_path(root, domain, split)
            if split == "index" and INDEX_FILE[domain] == QUERY_FILE:
                continue
            try:
                paths, _ = _parse_info(info)
            except DatasetError as exc:
                problems.append(str(exc))
                continue
            if expect_full and len(paths) != expected[domain]:
                problems.append(f"found {len(paths):,} entries in {info}, expected {expected[domain]:,}")
            if images.is_dir() and folder.is_dir():
                missing = [
                    p
                    for p in paths
                    if not (images / p).exists()
                    and not (domain == "rp2k" and (images / rp2k_escaped(p)).exists())
                ]
                if missing:
                    problems.append(
                        f"{len(missing):,} of {len(paths):,} images listed in {info} are missing"
                        f" under {images}"
                        f" (first: {images / missing[0]})"
                    )
    return problems


register_loader(
    UnedDataset,
    name=NAME,
    splits=SPLITS,
    description="UnED: universal image embedding kNN retrieval over 8 domains, merged index (mean R@1)",
    default_dirname="uned",
    homepage="https://cmp.felk.cvut.cz/univ_emb/",
    licence="split files from the UnED project; images under each source dataset's own terms"
    " (some need registration: DeepFashion In-shop, Food2K, iNat 2018, Met)",
    check=check_uned,
    how_to_get=sentence(HOW_TO_GET),
)
