"""Annotation CSV reading/validation and the image index."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from benchmark.classes import CLASS_CODES, CSV_COLUMNS
from benchmark.data.annotations import label_matrix, read_annotations, read_filenames, summarize
from benchmark.data.images import ImageIndex
from benchmark.errors import SewerbenchError

HEADER = ",".join(CSV_COLUMNS)


def row(name: str, labels: dict | None = None, water: int = 10, va: int = 0, nd: int | None = None,
        defect: int | None = None) -> str:
    labels = labels or {}
    vals = [labels.get(c, 0) for c in CLASS_CODES]
    d = int(any(v == 1 for v in vals)) if defect is None else defect
    n = (0 if d else 1) if nd is None else nd
    return ",".join([name, str(water), str(va), *map(str, vals), str(n), str(d)])


def write(tmp_path, lines, name="ann.csv", header=HEADER):
    p = tmp_path / name
    p.write_text("\n".join([header, *lines]) + "\n")
    return p


def good_lines():
    return [row("00000001.png", {"RB": 1, "FS": 1}, va=1),
            row("00000011.png"),
            row("00000021.png", {"OK": 1}, water=40)]


def test_reads_valid_csv_with_types_and_order(tmp_path):
    p = write(tmp_path, good_lines())
    df = read_annotations(p)
    assert list(df.columns) == list(CSV_COLUMNS)
    assert df["Filename"].tolist() == ["00000001.png", "00000011.png", "00000021.png"]
    assert all(df[c].dtype == np.int64 for c in CSV_COLUMNS[1:])
    assert df.loc[0, "RB"] == 1 and df.loc[0, "FS"] == 1 and df.loc[2, "WaterLevel"] == 40
    s = summarize(df)
    assert s["rows"] == 3 and s["defective"] == 2 and s["normal"] == 1
    assert s["positives"]["RB"] == 1 and s["positives"]["OK"] == 1 and s["positives"]["OB"] == 0


def test_leading_zeros_kept_for_numeric_looking_names(tmp_path):
    p = write(tmp_path, [row("00000123"), row("000456.png")])
    assert read_annotations(p)["Filename"].tolist() == ["00000123", "000456.png"]


def test_extra_columns_dropped_and_column_order_free(tmp_path):
    df = pd.read_csv(write(tmp_path, good_lines()), dtype={"Filename": str})
    df["Extra"] = 7
    df = df[list(reversed(df.columns))]
    p = tmp_path / "shuffled.csv"
    df.to_csv(p, index=False)
    out = read_annotations(p)
    assert list(out.columns) == list(CSV_COLUMNS)
    assert out["Filename"].tolist()[0] == "00000001.png"


@pytest.mark.parametrize("case, expect", [
    ("missing", r"nope\.csv: file not found"),
    ("dir", "is a directory"),
    ("empty", "empty file"),
    ("ragged", "malformed CSV"),
    ("binary", "not UTF-8"),
    ("norows", "no data rows"),
])
def test_unreadable_files(tmp_path, case, expect):
    if case == "missing":
        p = tmp_path / "nope.csv"
    elif case == "dir":
        p = tmp_path / "d.csv"
        p.mkdir()
    elif case == "empty":
        p = tmp_path / "e.csv"
        p.write_text("")
    elif case == "ragged":
        p = write(tmp_path, [row("a.png"), row("b.png") + ",1,2"])
    elif case == "binary":
        p = tmp_path / "b.csv"
        p.write_bytes(HEADER.encode() + b"\n\xff\xfe\xfa,1\n")
    else:
        p = write(tmp_path, [])
    with pytest.raises(SewerbenchError, match=expect) as e:
        read_annotations(p)
    assert "\n" not in str(e.value)


def test_missing_columns_named(tmp_path):
    header = ",".join(c for c in CSV_COLUMNS if c not in ("OB", "Defect"))
    p = tmp_path / "m.csv"
    p.write_text(header + "\n")
    with pytest.raises(SewerbenchError, match=r"m\.csv: header: missing columns OB, Defect"):
        read_annotations(p)


@pytest.mark.parametrize("bad, col", [("2", "PF"), ("x", "PF"), ("", "PF"), ("0.5", "PF"), ("-1", "PF")])
def test_non_binary_label_names_line_and_column(tmp_path, bad, col):
    lines = good_lines()
    fields = lines[1].split(",")
    fields[CSV_COLUMNS.index(col)] = bad
    lines[1] = ",".join(fields)
    p = write(tmp_path, lines)
    with pytest.raises(SewerbenchError, match=rf"ann\.csv: line 3: column {col}: .*not binary"):
        read_annotations(p)


def test_non_binary_nd_and_va_and_waterlevel(tmp_path):
    lines = good_lines()
    lines[2] = lines[2].replace("00000021.png,40,0", "00000021.png,40,3")
    with pytest.raises(SewerbenchError, match=r"line 4: column VA"):
        read_annotations(write(tmp_path, lines))
    lines = good_lines()
    lines[0] = lines[0].replace("00000001.png,10", "00000001.png,140")
    with pytest.raises(SewerbenchError, match=r"line 2: column WaterLevel: value '140'"):
        read_annotations(write(tmp_path, lines, "w.csv"))


def test_uncertain_labels_allowed_only_on_request(tmp_path):
    p = write(tmp_path, [row("a.png", {"RB": -1, "OB": 1}), row("b.png", {"RB": -1}, defect=0)])
    with pytest.raises(SewerbenchError, match="column RB"):
        read_annotations(p)
    df = read_annotations(p, allow_uncertain=True)
    assert df.loc[0, "RB"] == -1
    y = label_matrix(df)
    assert y.dtype == np.float32 and y[0, 0] == 0.0 and y[0, 1] == 1.0 and y[1].sum() == 0


def test_duplicate_filenames(tmp_path):
    lines = good_lines() + [row("00000011.png", {"OB": 1})]
    with pytest.raises(SewerbenchError,
                       match=r"line 5: column Filename: duplicate filename '00000011.png' \(also on line 3"):
        read_annotations(write(tmp_path, lines))


@pytest.mark.parametrize("name, what", [("imgs/00000002.png", "path components"),
                                        (r"C:\x\1.png", "path components"),
                                        ("..", "path components"),
                                        (" 3.png", "whitespace")])
def test_bad_filenames(tmp_path, name, what):
    lines = good_lines() + [row(name)]
    with pytest.raises(SewerbenchError, match=rf"line 5: column Filename: .*{what}"):
        read_annotations(write(tmp_path, lines))


def test_empty_filename(tmp_path):
    lines = good_lines() + [row("")]
    with pytest.raises(SewerbenchError, match=r"line 5: column Filename: empty filename"):
        read_annotations(write(tmp_path, lines))


def test_defect_inconsistent_both_ways(tmp_path):
    lines = good_lines() + [row("a.png", {"GR": 1}, defect=0, nd=0)]
    with pytest.raises(SewerbenchError, match=r"line 5: column Defect: Defect is 0 but class GR is 1 \(1 "):
        read_annotations(write(tmp_path, lines))
    lines = good_lines() + [row("a.png", defect=1, nd=0), row("b.png", defect=1, nd=0)]
    with pytest.raises(SewerbenchError, match=r"line 5: column Defect: Defect is 1 but all 17 .*\(2 incon"):
        read_annotations(write(tmp_path, lines, "b.csv"))


def test_nd_with_defect_is_only_a_warning(tmp_path, caplog):
    p = write(tmp_path, [row("a.png", {"RB": 1}, nd=1)])
    df = read_annotations(p)
    assert len(df) == 1
    assert "ND == 1 and Defect == 1" in caplog.text


def test_blank_lines_keep_line_numbers(tmp_path):
    lines = good_lines()
    lines.insert(1, "")
    fields = lines[3].split(",")
    fields[CSV_COLUMNS.index("RB")] = "7"
    lines[3] = ",".join(fields)
    with pytest.raises(SewerbenchError, match=r"line 5: column RB"):
        read_annotations(write(tmp_path, lines))


def make_images(root, names_by_folder):
    for folder, names in names_by_folder.items():
        d = root / folder
        d.mkdir(parents=True, exist_ok=True)
        for n in names:
            Image.fromarray(np.zeros((4, 5, 3), np.uint8)).save(d / n)


def test_image_index_walks_folders(tmp_path):
    root = tmp_path / "imgs"
    make_images(root, {"Train01": ["00000001.png"], "Train02/deep": ["00000011.png", "x.JPG"],
                       ".hidden": ["00000099.png"]})
    (root / "Train01" / "notes.txt").write_text("hi")
    (root / "Train01" / "00000021.npz").write_bytes(b"")
    idx = ImageIndex(root)
    assert len(idx) == 3
    assert "00000011.png" in idx and "x.JPG" in idx and "00000099.png" not in idx
    assert idx["00000011.png"] == root / "Train02" / "deep" / "00000011.png"
    assert idx.missing(["00000001.png", "zz.png"]) == ["zz.png"]
    with pytest.raises(SewerbenchError, match="no image named 'zz.png'"):
        idx.path("zz.png")
    import pickle
    assert pickle.loads(pickle.dumps(idx)).path("x.JPG") == idx.path("x.JPG")


def test_image_index_duplicates_and_missing_root(tmp_path):
    root = tmp_path / "imgs"
    make_images(root, {"a": ["00000001.png", "00000002.png"], "b": ["00000001.png"]})
    with pytest.raises(SewerbenchError, match=r"image '00000001.png' found in two folders .*1 duplicate"):
        ImageIndex(root)
    with pytest.raises(SewerbenchError, match="image folder not found"):
        ImageIndex(tmp_path / "none")


def test_missing_images_count_and_first_few(tmp_path):
    root = tmp_path / "imgs"
    make_images(root, {"a": ["00000001.png"]})
    lines = [row(f"{i:08d}.png") for i in range(1, 10)]
    p = write(tmp_path, lines)
    with pytest.raises(SewerbenchError,
                       match=r"ann\.csv: 8 filenames have no image under .*imgs \(first: 00000002.png, "
                             r"00000003.png, 00000004.png, 00000005.png, 00000006.png, \.\.\.\)"):
        read_annotations(p, ImageIndex(root))
    ok = write(tmp_path, [row("00000001.png")], "ok.csv")
    assert len(read_annotations(ok, ImageIndex(root))) == 1


def test_read_filenames_test_csv(tmp_path):
    p = tmp_path / "SewerML_Test.csv"
    p.write_text("Filename\n00000005.png\n00000007.png\n")
    df = read_filenames(p)
    assert list(df.columns) == ["Filename"] and df["Filename"].tolist() == ["00000005.png", "00000007.png"]
    p.write_text("Filename\n00000005.png\n00000005.png\n")
    with pytest.raises(SewerbenchError, match="line 3: column Filename: duplicate"):
        read_filenames(p)
    p.write_text("Name\n1.png\n")
    with pytest.raises(SewerbenchError, match="missing column Filename"):
        read_filenames(p)


def test_published_subset_files_validate():
    from benchmark.data.splits import default_subset_dir
    df = read_annotations(default_subset_dir() / "SewerML_Val_sub_0.0625.csv")
    assert len(df) == 8127 and df["Filename"].iloc[0] == "00000048.png"
