"""'tips-bench data list' and 'tips-bench data check' as a user runs them."""

from __future__ import annotations

from fixture_writers.ade20k import write_ade20k
from fixture_writers.voc import write_voc

from tips_bench.cli import main


def test_data_list_shows_every_dataset_and_where_it_is_expected(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TIPS_BENCH_DATA", str(tmp_path))
    write_ade20k(tmp_path)
    assert main(["data", "list"]) == 0
    out = capsys.readouterr().out
    for name in ["voc", "ade20k", "pascal_context59", "pascal_context60", "nyu_depth", "nyu_normals", "navi",
                 "navi_pairs", "spair", "imagenet", "uned", "coco_captions", "flickr30k_captions", "docci"]:
        assert name in out
    ade_line = next(line for line in out.splitlines() if "│ ade20k " in line)
    assert "yes" in ade_line


def test_data_check_ok_then_names_the_missing_file(tmp_path, capsys):
    root = write_voc(tmp_path)
    assert main(["data", "check", "voc", "--root", str(root)]) == 0
    assert "complete" in capsys.readouterr().out
    missing = root / "VOC2012" / "ImageSets" / "Segmentation" / "val.txt"
    missing.unlink()
    assert main(["data", "check", "voc", "--root", str(root)]) == 1
    out = capsys.readouterr().out
    assert "val.txt" in out and "How to get it" in out


def test_data_check_unknown_dataset(capsys):
    assert main(["data", "check", "imagenet21k"]) == 2
    assert "'imagenet21k' is neither a task nor a dataset" in capsys.readouterr().err
