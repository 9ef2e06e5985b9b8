"""Split preparation: published subset matching, systematic rule, stratified fractions, prepare."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from benchmark.classes import CLASS_CODES, CSV_COLUMNS
from benchmark.cli import main
from benchmark.data.annotations import read_annotations
from benchmark.data.splits import (PUBLISHED_SUBSETS, fraction_name, prepare, published_subset,
                                   stratified_fraction, systematic_subset)
from benchmark.errors import SewerbenchError


def make_frame(n: int, seed: int = 0, start: int = 1, step: int = 1) -> pd.DataFrame:
    """A valid annotation frame with correlated, imbalanced labels."""
    rng = np.random.default_rng(seed)
    p = np.linspace(0.30, 0.01, len(CLASS_CODES))
    y = (rng.random((n, len(CLASS_CODES))) < p).astype(np.int64)
    y[:, 16] |= y[:, 4] & (rng.random(n) < 0.5)  # co-occurrence FS -> OK
    df = pd.DataFrame(y, columns=list(CLASS_CODES))
    df.insert(0, "Filename", [f"{start + i * step:08d}.png" for i in range(n)])
    df.insert(1, "WaterLevel", rng.choice([0, 5, 10, 20, 30], n))
    df.insert(2, "VA", rng.integers(0, 2, n))
    defect = y.any(axis=1).astype(np.int64)
    df["ND"] = np.where(defect == 0, rng.integers(0, 2, n), 0)
    df["Defect"] = defect
    return df[list(CSV_COLUMNS)]


# ------------------------------------------------------------------ subset rules
def test_published_subset_matches_rows_in_subset_order():
    full = make_frame(50).sample(frac=1.0, random_state=1).reset_index(drop=True)
    sub = full.sort_values("Filename").iloc[::7].reset_index(drop=True)
    got = published_subset(full, sub, "full.csv", "sub.csv")
    pd.testing.assert_frame_equal(got, sub)


def test_published_subset_label_mismatch_and_absent_rows():
    full = make_frame(40)
    sub = full.iloc[[3, 9, 20]].reset_index(drop=True).copy()
    sub.loc[1, "WaterLevel"] = 99
    with pytest.raises(SewerbenchError, match=r"sub\.csv: line 3: 00000010\.png has other labels in full\.csv "
                                              r"\(WaterLevel \d+ vs 99\); 1 rows disagree"):
        published_subset(full, sub, "full.csv", "sub.csv")
    sub = full.iloc[[3, 9]].reset_index(drop=True).copy()
    sub.loc[2] = sub.loc[0]
    sub.loc[2, "Filename"] = "99999999.png"
    with pytest.raises(SewerbenchError, match=r"1 of 3 subset filenames are not in full\.csv .*99999999\.png"
                                              r".*--subset-rule systematic"):
        published_subset(full, sub, "full.csv", "sub.csv")


def test_systematic_subset_every_16th_sorted():
    df = make_frame(40).sample(frac=1.0, random_state=3)
    sub = systematic_subset(df)
    assert sub["Filename"].tolist() == ["00000001.png", "00000017.png"]  # floor(40/16) = 2
    assert len(systematic_subset(make_frame(33))) == 2
    assert len(systematic_subset(make_frame(5))) == 1


def test_systematic_rule_reproduces_published_construction_shape():
    # 65,008 = floor(1,040,129 / 16) and 8,127 = floor(130,046 / 16): the rule's row counts
    assert 1_040_129 // 16 == PUBLISHED_SUBSETS["train"][1] and 130_046 // 16 == PUBLISHED_SUBSETS["val"][1]
    df = pd.DataFrame({"Filename": [f"{i:08d}.png" for i in range(10_401, 0, -1)]})
    sub = systematic_subset(df)
    assert len(sub) == 10_401 // 16 and sub["Filename"].iloc[0] == "00000001.png"
    assert sub["Filename"].iloc[1] == "00000017.png" and sub["Filename"].is_monotonic_increasing


# ------------------------------------------------------------------ stratified fractions
@pytest.mark.parametrize("fraction", [0.125, 0.25, 0.5])
def test_stratified_fraction_keeps_class_proportions(fraction):
    df = make_frame(4000, seed=5)
    cut = stratified_fraction(df, fraction, seed=0)
    assert abs(len(cut) - fraction * len(df)) <= 0.01 * len(df)
    full_pos = df[list(CLASS_CODES)].sum().to_numpy()
    cut_pos = cut[list(CLASS_CODES)].sum().to_numpy()
    # every class within 2 rows (or 2%) of its exact share
    assert np.all(np.abs(cut_pos - fraction * full_pos) <= np.maximum(2, 0.02 * fraction * full_pos))
    normal_full = (df[list(CLASS_CODES)].sum(axis=1) == 0).sum()
    normal_cut = (cut[list(CLASS_CODES)].sum(axis=1) == 0).sum()
    assert abs(normal_cut - fraction * normal_full) <= 2
    # rows are a subset, in original order, unchanged
    assert cut["Filename"].is_unique and set(cut["Filename"]) <= set(df["Filename"])
    assert cut["Filename"].is_monotonic_increasing
    pd.testing.assert_frame_equal(cut, df.set_index("Filename").loc[cut["Filename"]].reset_index())


def test_stratified_fraction_deterministic_by_seed():
    df = make_frame(1000, seed=2)
    a = stratified_fraction(df, 0.25, seed=7)
    b = stratified_fraction(df, 0.25, seed=7)
    c = stratified_fraction(df, 0.25, seed=8)
    assert a["Filename"].tolist() == b["Filename"].tolist()
    assert a["Filename"].tolist() != c["Filename"].tolist()


def test_stratified_fraction_sparse_powerset_and_edges():
    # every row its own label combination: a label-powerset split would be impossible
    rng = np.random.default_rng(0)
    n = 300
    y = rng.integers(0, 2, (n, 17))
    df = pd.DataFrame(y, columns=list(CLASS_CODES))
    df.insert(0, "Filename", [f"{i:04d}.png" for i in range(n)])
    df = df.drop_duplicates(list(CLASS_CODES))
    want = 0.25 * df[list(CLASS_CODES)].sum().to_numpy()
    for seed in range(3):
        cut = stratified_fraction(df, 0.25, seed=seed)
        pos = cut[list(CLASS_CODES)].sum().to_numpy()
        # every class at (one of) the nearest achievable count(s): |error| < 1 row
        assert np.all(np.abs(pos - want) < 1), (seed, pos - want)
        assert abs(len(cut) - 0.25 * len(df)) <= 2
        assert cut["Filename"].is_unique and cut["Filename"].is_monotonic_increasing
    # plain random sampling of the same size misses that bound (by 3.75 rows or more on this
    # data), so the assertion above can tell stratification from sampling
    for seed in range(20):
        rnd = df.sample(n=len(cut), random_state=seed)
        assert np.abs(rnd[list(CLASS_CODES)].sum().to_numpy() - want).max() > 3
    assert len(stratified_fraction(df, 1.0)) == len(df)
    with pytest.raises(SewerbenchError, match="fraction must be in"):
        stratified_fraction(df, 0.0)
    with pytest.raises(SewerbenchError, match="fraction must be in"):
        stratified_fraction(df, 1.5)


# ------------------------------------------------------------------ prepare
def _png(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((6, 8, 3), 100, np.uint8)).save(path)


def make_source(root, n_train=64, n_val=32, n_test=20, synthetic=True, images=True):
    """A tiny dataset in the official layout (images over two folders)."""
    root.mkdir(parents=True, exist_ok=True)
    n = n_train + n_val + n_test
    allf = make_frame(n, seed=11)
    rng = np.random.default_rng(0)
    order = rng.permutation(n)
    train = allf.iloc[np.sort(order[:n_train])].reset_index(drop=True)
    val = allf.iloc[np.sort(order[n_train:n_train + n_val])].reset_index(drop=True)
    test = allf.iloc[np.sort(order[n_train + n_val:])].reset_index(drop=True)
    train.to_csv(root / "SewerML_Train.csv", index=False)
    val.to_csv(root / "SewerML_Val.csv", index=False)
    test[["Filename"]].to_csv(root / "SewerML_Test.csv", index=False)
    if synthetic:
        test.to_csv(root / "SewerML_Test_gt.csv", index=False)
        (root / "meta.json").write_text(json.dumps({"synthetic": True, "seed": 0}))
    if images:
        for i, name in enumerate(allf["Filename"]):
            _png(root / ("images_a" if i % 2 else "images_b") / name)
    return train, val, test


def test_prepare_synthetic_systematic(tmp_path):
    train, val, test = make_source(tmp_path / "src")
    out = tmp_path / "out"
    s = prepare(tmp_path / "src", out, fractions=[0.25, 0.5], seed=3)
    assert s["kind"] == "synthetic" and s["subset"]["rule"] == "systematic"
    names = {"full/train", "full/val", "full/test", "full/test_gt", "sub_0.0625/train",
             "sub_0.0625/val", "frac_0.25/train", "frac_0.25/val", "frac_0.5/train", "frac_0.5/val"}
    assert set(s["splits"]) == names
    for name in names:
        assert (out / f"{name}.csv").is_file()
    assert json.loads((out / "splits.json").read_text()) == s
    assert s["splits"]["full/train"]["rows"] == 64 and s["splits"]["sub_0.0625/train"]["rows"] == 4
    assert s["splits"]["sub_0.0625/val"]["rows"] == 2
    assert s["splits"]["frac_0.25/train"]["rows"] == pytest.approx(16, abs=1)
    assert s["splits"]["full/train"]["positives"]["RB"] == int(train["RB"].sum())
    pd.testing.assert_frame_equal(read_annotations(out / "full/train.csv"), train)
    assert read_annotations(out / "sub_0.0625/train.csv")["Filename"].tolist() == \
        sorted(train["Filename"])[0::16][:4]
    assert pd.read_csv(out / "full/test.csv", dtype=str).columns.tolist() == ["Filename"]
    assert fraction_name(0.125) == "frac_0.125"


def test_prepare_records_a_digest_of_the_synthetic_images(tmp_path):
    """The training stages depend on data/prepared, not on the image folder: new image bytes
    (same names, same labels) must change splits.json."""
    make_source(tmp_path / "src")
    a = prepare(tmp_path / "src", tmp_path / "a")
    assert a["images"]["count"] == 116 and len(a["images"]["sha256"]) == 64
    assert prepare(tmp_path / "src", tmp_path / "b")["images"] == a["images"]   # deterministic
    victim = next((tmp_path / "src").rglob("*.png"))
    victim.write_bytes(victim.read_bytes() + b"\0")    # a trailing byte: same image, other file
    assert prepare(tmp_path / "src", tmp_path / "c")["images"]["sha256"] != a["images"]["sha256"]
    make_source(tmp_path / "real", synthetic=False)
    assert "images" not in prepare(tmp_path / "real", tmp_path / "d", subset_rule="systematic")


def test_prepare_real_uses_published_subset(tmp_path):
    train, val, _ = make_source(tmp_path / "src", synthetic=False)
    sub_dir = tmp_path / "splits"
    sub_dir.mkdir()
    sub_train = train.iloc[[0, 5, 9]]
    sub_val = val.iloc[[1, 2]]
    sub_train.to_csv(sub_dir / PUBLISHED_SUBSETS["train"][0], index=False)
    sub_val.to_csv(sub_dir / PUBLISHED_SUBSETS["val"][0], index=False)
    s = prepare(tmp_path / "src", tmp_path / "out", subset_dir=sub_dir)
    assert s["kind"] == "real" and s["subset"]["rule"] == "published"
    assert s["subset"]["files"]["train"]["published"] is False  # hash differs: warned, recorded
    got = read_annotations(tmp_path / "out" / "sub_0.0625" / "train.csv")
    pd.testing.assert_frame_equal(got, sub_train.reset_index(drop=True))
    assert "full/test_gt" not in s["splits"] and s["splits"]["full/test"]["rows"] == 20

    bad = sub_val.copy()
    bad.iloc[0, bad.columns.get_loc("VA")] = 1 - bad.iloc[0]["VA"]
    bad.to_csv(sub_dir / PUBLISHED_SUBSETS["val"][0], index=False)
    with pytest.raises(SewerbenchError, match=r"SewerML_Val_sub_0\.0625\.csv: line 2: .* has other labels"):
        prepare(tmp_path / "src", tmp_path / "out2", subset_dir=sub_dir)
    assert not (tmp_path / "out2" / "splits.json").exists()


def test_prepare_real_with_the_committed_subset_files(tmp_path):
    # A "full" CSV built from the published subset rows plus others: the subset comes back exactly.
    from benchmark.data.splits import default_subset_dir
    sub = read_annotations(default_subset_dir() / PUBLISHED_SUBSETS["val"][0])
    extra = make_frame(100, seed=4, start=90_000_001)
    full_val = pd.concat([extra.iloc[:50], sub, extra.iloc[50:]], ignore_index=True)
    src = tmp_path / "src"
    src.mkdir()
    full_val.to_csv(src / "SewerML_Val.csv", index=False)
    sub_t = read_annotations(default_subset_dir() / PUBLISHED_SUBSETS["train"][0])
    sub_t.to_csv(src / "SewerML_Train.csv", index=False)
    s = prepare(src, tmp_path / "out", check_images=False)
    assert s["subset"]["files"]["val"]["published"] is True
    assert s["splits"]["sub_0.0625/val"]["rows"] == 8127
    got = read_annotations(tmp_path / "out" / "sub_0.0625" / "val.csv")
    pd.testing.assert_frame_equal(got, sub)


def test_prepare_errors(tmp_path):
    with pytest.raises(SewerbenchError, match="source folder not found"):
        prepare(tmp_path / "nothing", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SewerbenchError, match="SewerML_Train.csv not found"):
        prepare(tmp_path / "empty", tmp_path / "out")
    make_source(tmp_path / "src", images=False)
    with pytest.raises(SewerbenchError, match=r"SewerML_Train\.csv: 64 filenames have no image"):
        prepare(tmp_path / "src", tmp_path / "out")
    # overlapping train/val
    val = pd.read_csv(tmp_path / "src" / "SewerML_Val.csv", dtype={"Filename": str})
    train = pd.read_csv(tmp_path / "src" / "SewerML_Train.csv", dtype={"Filename": str})
    pd.concat([val, train.iloc[:1]]).to_csv(tmp_path / "src" / "SewerML_Val.csv", index=False)
    with pytest.raises(SewerbenchError, match="1 filenames are also in"):
        prepare(tmp_path / "src", tmp_path / "out", check_images=False)


def test_cli_prepare(tmp_path, capsys):
    make_source(tmp_path / "src")
    rc = main(["prepare", "--source", str(tmp_path / "src"), "--out", str(tmp_path / "out"),
               "--fractions", "0.125", "--seed", "1"])
    assert rc == 0
    assert (tmp_path / "out" / "frac_0.125" / "train.csv").is_file()
    assert "sub_0.0625/train: 4 rows" in capsys.readouterr().out
    rc = main(["prepare", "--source", str(tmp_path / "missing"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("sewerbench: error: ") and err.count("\n") == 1
