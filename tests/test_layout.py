"""PreparedLayout: the one reader of <prepared>/splits.json (paths, ground truths, image root, kind)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from benchmark.classes import CLASS_CODES
from benchmark.data.layout import FULL_SPLIT, SPLITS_FILE, PreparedLayout
from benchmark.data.splits import prepare
from benchmark.errors import SewerbenchError
from benchmark.matrix import data_kind
from helpers import gt_frame


def _frame(names, seed=0):
    rng = np.random.default_rng(seed)
    return gt_frame(names, (rng.random((len(names), len(CLASS_CODES))) < 0.2).astype(np.int64))


def _source(root: Path, synthetic: bool = True, test_labels: bool = True) -> Path:
    root.mkdir(parents=True)
    _frame([f"{i:08d}.png" for i in range(1, 65)]).to_csv(root / "SewerML_Train.csv", index=False)
    _frame([f"{i:08d}.png" for i in range(101, 133)], 1).to_csv(root / "SewerML_Val.csv", index=False)
    test = _frame([f"{i:08d}.png" for i in range(201, 221)], 2)
    test[["Filename"]].to_csv(root / "SewerML_Test.csv", index=False)
    if test_labels:
        test.to_csv(root / "SewerML_Test_gt.csv", index=False)
    if synthetic:
        (root / "meta.json").write_text(json.dumps({"synthetic": True}))
    return root


@pytest.fixture()
def prepared(tmp_path):
    src = _source(tmp_path / "src")
    out = tmp_path / "prepared"
    prepare(src, out, fractions=[0.25], seed=0, check_images=False)
    return src, out


def test_layout_reads_what_prepare_writes(prepared):
    src, out = prepared
    lay = PreparedLayout.load(out)
    assert lay.recorded and lay.root == out and lay.full_split == FULL_SPLIT == "full"
    assert lay.splits == ("full", "sub_0.0625", "frac_0.25")
    for split in lay.splits:
        assert lay.train_csv(split) == out / split / "train.csv" and lay.train_csv(split).is_file()
        assert lay.val_csv(split) == out / split / "val.csv" and lay.val_csv(split).is_file()
    assert lay.test_csv() == out / "full" / "test.csv" and lay.test_csv().is_file()
    assert lay.test_gt_csv() == out / "full" / "test_gt.csv"
    assert lay.image_root == str(src)
    assert lay.kind == "synthetic" and data_kind(out) == "synthetic"
    lay.require_split("frac_0.25")
    with pytest.raises(SewerbenchError, match=r"splits\.json: no prepared split 'frac_0\.5' "
                                              r"\(prepared: full, sub_0\.0625, frac_0\.25\)"):
        lay.require_split("frac_0.5")
    assert PreparedLayout.from_dir(out) == lay


def test_ground_truths_per_training_split(prepared):
    _, out = prepared
    lay = PreparedLayout.load(out)
    assert lay.ground_truths("full") == {"val": out / "full" / "val.csv",
                                         "test": out / "full" / "test_gt.csv"}
    assert lay.ground_truths("sub_0.0625") == {"val": out / "full" / "val.csv",
                                               "val_sub": out / "sub_0.0625" / "val.csv",
                                               "test": out / "full" / "test_gt.csv"}
    assert list(lay.ground_truths("sub_0.0625")) == ["val", "val_sub", "test"]


def test_real_source_without_test_labels(tmp_path):
    src = _source(tmp_path / "src", synthetic=False, test_labels=False)
    out = tmp_path / "prepared"
    prepare(src, out, subset_rule="systematic", check_images=False)
    lay = PreparedLayout.load(out)
    assert lay.test_gt_csv() is None and "test" not in lay.ground_truths("full")
    assert lay.kind == f"Sewer-ML at {src}"
    assert data_kind(out, {"profile": "smoke"}) == f"Sewer-ML at {src}"  # recorded beats the profile


def test_recorded_paths_are_used(tmp_path):
    """Paths come from splits.json, not from a naming convention."""
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "v.csv").write_text("Filename\n")
    info = {"format": 1, "source": "/data/x", "image_root": "/img", "kind": "real",
            "splits": {"full/train": {"path": "elsewhere/t.csv"}, "full/val": {"path": "elsewhere/v.csv"},
                       "full/test_gt": {"path": "elsewhere/missing.csv"}}}
    (tmp_path / SPLITS_FILE).write_text(json.dumps(info))
    lay = PreparedLayout.load(tmp_path)
    assert lay.val_csv("full") == tmp_path / "elsewhere" / "v.csv"
    assert lay.train_csv("full") == tmp_path / "elsewhere" / "t.csv"
    assert lay.test_gt_csv() is None  # recorded but absent
    assert lay.image_root == "/img" and lay.kind == "Sewer-ML at /data/x" and lay.splits == ("full",)
    # a split that was not recorded gets the conventional path
    assert lay.val_csv("frac_0.5") == tmp_path / "frac_0.5" / "val.csv"


def test_without_splits_json_defaults(tmp_path):
    """Hand-made prepared folders (test fixtures) have no splits.json: from_dir is tolerant."""
    (tmp_path / "full").mkdir()
    (tmp_path / "sub_0.0625").mkdir()
    (tmp_path / "full" / "val.csv").write_text("Filename\n")
    (tmp_path / "sub_0.0625" / "val.csv").write_text("Filename\n")
    (tmp_path / "notes").mkdir()
    lay = PreparedLayout.from_dir(tmp_path)
    assert not lay.recorded and lay.image_root is None and lay.kind == "unknown"
    assert lay.splits == ("full", "sub_0.0625")
    assert lay.ground_truths("sub_0.0625") == {"val": tmp_path / "full" / "val.csv",
                                               "val_sub": tmp_path / "sub_0.0625" / "val.csv"}
    (tmp_path / "full" / "test_gt.csv").write_text("Filename\n")
    assert lay.ground_truths("full") == {"val": tmp_path / "full" / "val.csv",
                                         "test": tmp_path / "full" / "test_gt.csv"}
    assert data_kind(tmp_path, {"profile": "smoke"}) == "synthetic"
    assert data_kind(tmp_path, {"profile": "paper"}) == "unknown"
    assert PreparedLayout.from_dir(tmp_path / "nothing").splits == ()
    with pytest.raises(SewerbenchError, match=r"splits\.json: missing \(run `sewerbench prepare`"):
        PreparedLayout.load(tmp_path)


@pytest.mark.parametrize("text, match", [
    ("{not json", r"splits\.json: line 1: invalid JSON"),
    ("[1, 2]", r"splits\.json: top level must be an object"),
    ('{"format": 2, "splits": {}}', r"splits\.json: format 2 is not supported"),
    ('{"format": 1}', r"splits\.json: 'splits' must be an object"),
    ('{"format": 1, "splits": {"full/train": {}}}', r"splits\.json: splits: full/train: missing 'path'"),
    ('{"format": 1, "splits": {"train": {"path": "t.csv"}}}', r"'train' is not '<split>/<part>'"),
])
def test_corrupt_splits_json_is_one_line_error(tmp_path, text, match):
    (tmp_path / SPLITS_FILE).write_text(text)
    for reader in (PreparedLayout.load, PreparedLayout.from_dir):
        with pytest.raises(SewerbenchError, match=match) as exc:
            reader(tmp_path)
        assert "\n" not in str(exc.value) and str(tmp_path / SPLITS_FILE) in str(exc.value)
