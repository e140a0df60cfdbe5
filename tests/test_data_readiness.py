"""`tips-bench data check TASK-or-DATASET`: "ready" means the task's run will find its data."""

from __future__ import annotations

from tips_bench.cli import main


def test_task_check_rejects_a_layout_the_task_does_not_read(tmp_path, capsys):
    from fixture_writers.nyu import write_nyu_depth

    mat = write_nyu_depth(tmp_path / "mat", layout="mat")  # the official .mat: nyu_depth pins the BTS layout
    assert main(["data", "check", "nyu_depth", "--root", str(mat)]) == 1
    out = capsys.readouterr().out
    assert "task nyu_depth: NOT ready" in out and "BTS split file" in out
    bts = write_nyu_depth(tmp_path / "bts", layout="bts")
    assert main(["data", "check", "nyu_depth", "--root", str(bts)]) == 0
    assert "task nyu_depth: ready" in capsys.readouterr().out


def test_dataset_check_reports_every_task_reading_it(tmp_path, capsys):
    from fixture_writers.voc import write_voc

    root = write_voc(tmp_path / "voc", aug="none")  # VOC without SBD: voc_seg trains on trainaug
    assert main(["data", "check", "voc", "--root", str(root)]) == 1
    out = capsys.readouterr().out
    assert "task voc_seg: NOT ready" in out and "task voc21_zeroseg: ready" in out
    assert main(["data", "check", "voc_seg", "--root", str(root)]) == 1


def test_unknown_name_and_builtin_data(capsys):
    assert main(["data", "check", "no_such_thing"]) == 2
    assert "neither a task nor a dataset" in capsys.readouterr().err
    assert main(["data", "check", "toy_seg"]) == 0
