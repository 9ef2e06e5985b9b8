"""Reliability, fault class "bad input": every bad input of synth, prepare, combine, check,
tables and plots is refused with one line ``sewerbench: error: <file or argument>: <problem>``,
exit 2, no traceback and no output written; images of any mode are converted correctly or
refused by name; ``--debug`` shows the traceback.

``CASES`` is the corpus: ``(command, case id, argv builder, text the message must contain)``.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmark.classes import CLASS_CODES
from benchmark.cli import main
from benchmark.errors import SewerbenchError

W, H = 32, 24
REPO = Path(__file__).resolve().parents[1]


def _write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    (path.write_bytes if isinstance(text, bytes) else path.write_text)(text)
    return path


def _scores_csv(path: Path, value: str = "0.25", binary: bool = False, n: int = 4, bad_row: int | None = None,
                bad: str = "high") -> Path:
    cols = ["Defect"] if binary else list(CLASS_CODES)
    rows = [",".join(["Filename", *cols])]
    for i in range(1, n + 1):
        vals = [value] * len(cols)
        if bad_row == i:
            vals[-1] = bad
        rows.append(",".join([f"{i:08d}.png", *vals]))
    return _write(path, "\n".join(rows) + "\n")


class Env:
    """Files for the corpus, made once per module under ``root``."""

    def __init__(self, root: Path):
        self.root = root
        self.out = root / "outputs"
        self.synth_params = _write(root / "synth.yaml",
                                   f"seed: 0\nsynth:\n  out: {self.out / 'ds'}\n  n_train: 4\n  n_val: 2\n"
                                   f"  n_test: 2\n  width: {W}\n  height: {H}\n  workers: 1\n")
        self.s1 = _scores_csv(root / "s1.csv", binary=True)
        self.s2 = _scores_csv(root / "s2.csv")
        self.ref = root / "ref"
        shutil.copytree(REPO / "results" / "reference", self.ref)
        self.metrics = root / "metrics"
        self.runs = root / "runs"
        self.runs.mkdir()
        self.prepared = root / "prepared"
        self.prepared.mkdir()
        self.params = _write(root / "params.yaml", "seed: 0\nprofile: smoke\nruns: {}\n")
        self.folder = root / "a_folder"
        self.folder.mkdir()
        self.file = _write(root / "a_file.txt", "keep")
        self.binary = _write(root / "binary.bin", bytes(range(256)) * 4)

    def synth(self, *extra: str, params: Path | None = None) -> list[str]:
        return ["synth", "--params", str(params or self.synth_params), *extra]

    def yaml(self, name: str, text: str) -> Path:
        return _write(self.root / "yaml" / name, text)

    def prepare(self, *extra: str) -> list[str]:
        return ["prepare", *extra]

    def combine(self, s1=None, s2=None, out=None) -> list[str]:
        return ["combine", "--stage1", str(s1 or self.s1), "--stage2", str(s2 or self.s2),
                "--out", str(out or self.out / "c.csv")]

    def ref_with(self, name: str, content) -> Path:
        d = self.root / "refs" / name
        shutil.copytree(self.ref, d)
        text = content if isinstance(content, (str, bytes)) else json.dumps(content)
        _write(d / "reference.json", text)
        return d

    def metrics_with(self, name: str, content) -> Path:
        d = self.root / "metrics_dirs" / name
        text = content if isinstance(content, (str, bytes)) else json.dumps(content)
        _write(d / "run_a" / "val.json", text)
        return d

    def tables(self, cmd: str = "tables", metrics=None, **over) -> list[str]:
        args = {"--params": self.params, "--metrics": metrics or self.metrics_with("good", GOOD_METRICS),
                "--runs": self.runs, "--prepared": self.prepared, "--out": self.out / "results"}
        args.update({f"--{k.replace('_', '-')}": v for k, v in over.items()})
        argv = [cmd]
        for k, v in args.items():
            argv += [k, str(v)]
        return argv


GOOD_METRICS = {"New": {"F2": 0.5, "F1_Normal": 0.5}, "Main": {"mAP": 0.5}}


def _synth_src(env: Env) -> Path:
    """A small synthetic Sewer-ML folder (for prepare)."""
    d = env.root / "synthetic"
    if not d.exists():
        from benchmark.synth import SynthConfig, generate
        generate(SynthConfig.from_dict(dict(out=str(d), n_train=32, n_val=16, n_test=16, width=W, height=H,
                                            workers=1, folder_size=16)), progress=False)
    return d


CASES = [
    # ---- synth (18)
    ("synth", "params-is-folder", lambda e: e.synth(params=e.folder), "--params is a folder"),
    ("synth", "params-missing", lambda e: e.synth(params=e.root / "nope.yaml"), "no such parameter file"),
    ("synth", "params-bad-yaml", lambda e: e.synth(params=e.yaml("bad.yaml", "synth: [1, 2\n")), "invalid YAML"),
    ("synth", "params-binary", lambda e: e.synth(params=e.binary), "binary.bin"),
    ("synth", "params-not-mapping", lambda e: e.synth(params=e.yaml("list.yaml", "- 1\n- 2\n")), "top level must be a mapping"),
    ("synth", "section-not-mapping", lambda e: e.synth(params=e.yaml("s.yaml", "synth: 3\n")), "synth: must be a mapping"),
    ("synth", "unknown-key", lambda e: e.synth(params=e.yaml("k.yaml", "synth:\n  n_trian: 3\n")),
     "synth.n_trian: unknown key (did you mean n_train?)"),
    ("synth", "wrong-type-int", lambda e: e.synth(params=e.yaml("t.yaml", "synth:\n  n_train: many\n")),
     "synth.n_train: expected int"),
    ("synth", "fractional-int", lambda e: e.synth(params=e.yaml("f.yaml", "synth:\n  n_val: 2.5\n")),
     "synth.n_val: expected int"),
    ("synth", "out-not-string", lambda e: e.synth(params=e.yaml("o.yaml", "synth:\n  out: [a, b]\n")),
     "synth.out: expected str"),
    ("synth", "difficulty-range", lambda e: e.synth("--difficulty", "2"), "synth.difficulty"),
    ("synth", "workers-zero", lambda e: e.synth("--workers", "0"), "--workers: must be >= 1"),
    ("synth", "label-source-missing", lambda e: e.synth("--label-source", str(e.root / "nolabels")),
     "--label-source: no such folder"),
    ("synth", "label-source-bad-values", lambda e: e.synth("--label-source", str(_bad_label_source(e))),
     "column RB: value 'x' is not 0 or 1"),
    ("synth", "no-generate-alone", lambda e: e.synth("--no-generate"), "--no-generate: only with --calibrate"),
    ("synth", "no-generate-no-dataset", lambda e: e.synth("--calibrate", "--no-generate"), "not a synthetic dataset"),
    ("synth", "calibration-out-folder", lambda e: e.synth("--calibrate", "--calibration-out", str(e.folder)),
     "--calibration-out is a folder"),
    ("synth", "calibrate-unknown-key", lambda e: e.synth(params=e.yaml("c.yaml", "synth:\n  calibrate: {epoks: 2}\n")),
     "synth.calibrate.epoks: unknown key (did you mean epochs?)"),
    # ---- prepare (9)
    ("prepare", "source-missing", lambda e: e.prepare("--source", str(e.root / "nosrc"), "--out", str(e.out / "p")),
     "--source: no such folder"),
    ("prepare", "source-is-file", lambda e: e.prepare("--source", str(e.file), "--out", str(e.out / "p")),
     "--source: is a file"),
    ("prepare", "source-without-csv", lambda e: e.prepare("--source", str(e.folder), "--out", str(e.out / "p")),
     "SewerML_Train.csv not found"),
    ("prepare", "subset-dir-missing", lambda e: e.prepare("--source", str(_synth_src(e)), "--out", str(e.out / "p"),
                                                          "--subset-dir", str(e.root / "nosub")), "--subset-dir: no such folder"),
    ("prepare", "fraction-zero", lambda e: e.prepare("--source", str(_synth_src(e)), "--out", str(e.out / "p"),
                                                     "--fractions", "0"), "--fractions: each fraction must be in (0, 1]"),
    ("prepare", "fraction-above-one", lambda e: e.prepare("--source", str(_synth_src(e)), "--out", str(e.out / "p"),
                                                          "--fractions", "1.5"), "--fractions"),
    ("prepare", "fraction-nan", lambda e: e.prepare("--source", str(_synth_src(e)), "--out", str(e.out / "p"),
                                                    "--fractions", "nan"), "--fractions"),
    ("prepare", "out-is-file", lambda e: e.prepare("--source", str(_synth_src(e)), "--out", str(e.file)),
     "--out is an existing file"),
    ("prepare", "bad-annotation", lambda e: e.prepare("--source", str(_bad_source(e)), "--out", str(e.out / "p")),
     "SewerML_Train.csv: line 3: column RB"),
    # ---- combine (11)
    ("combine", "stage1-missing", lambda e: e.combine(s1=e.root / "none.csv"), "--stage1: no such file"),
    ("combine", "stage2-is-folder", lambda e: e.combine(s2=e.folder), "--stage2: is a folder"),
    ("combine", "stage1-non-numeric", lambda e: e.combine(s1=_scores_csv(e.root / "nn1.csv", binary=True, bad_row=3)),
     "nn1.csv: line 4: column Defect: value 'high' is not a number"),
    ("combine", "stage1-empty-value", lambda e: e.combine(s1=_scores_csv(e.root / "ev1.csv", binary=True, bad_row=2, bad="")),
     "ev1.csv: line 3: column Defect: empty value is not a number"),
    ("combine", "stage2-non-numeric", lambda e: e.combine(s2=_scores_csv(e.root / "nn2.csv", bad_row=1, bad="0,5")),
     "nn2.csv"),
    ("combine", "stage1-empty-file", lambda e: e.combine(s1=_write(e.root / "empty.csv", "")), "empty.csv: empty file"),
    ("combine", "stage1-binary", lambda e: e.combine(s1=e.binary), "binary.bin"),
    ("combine", "stage1-no-defect-column", lambda e: e.combine(s1=_write(e.root / "nd.csv", "Filename,x\na.png,1\n")),
     "nd.csv: missing column Defect"),
    ("combine", "out-is-folder", lambda e: e.combine(out=e.folder), "--out is a folder"),
    ("combine", "out-under-a-file", lambda e: e.combine(out=e.file / "c.csv"), "a_file.txt is a file"),
    ("combine", "scores-out-of-range", lambda e: e.combine(s2=_scores_csv(e.root / "r2.csv", value="1.5")),
     "probabilities in [0, 1]"),
    # ---- check (12)
    ("check", "case-typo", lambda e: ["check", "--reference-dir", str(e.ref), "--case", "evalute_a"],
     "--case: unknown case 'evalute_a' (did you mean 'evaluate_a'?)"),
    ("check", "update-case-typo", lambda e: ["check", "--reference-dir", str(e.ref), "--update", "--case", "tiny"],
     "--case: unknown case 'tiny'"),
    ("check", "case-not-in-reference", lambda e: ["check", "--reference-dir", str(e.ref_with("only_a", {"cases": {
        "evaluate_a": {"expected": {"mAP": 0.75}}}})), "--case", "paired_ab"], "'paired_ab' is not in the reference file"),
    ("check", "empty-cases", lambda e: ["check", "--reference-dir", str(e.ref_with("empty", {"cases": {}}))],
     "no metric compared"),
    ("check", "no-expected-values", lambda e: ["check", "--reference-dir", str(e.ref_with("noexp", {"cases": {
        "evaluate_a": {"expected": {}}}}))], "no metric compared"),
    ("check", "top-level-list", lambda e: ["check", "--reference-dir", str(e.ref_with("list", [1, 2]))],
     "reference.json: top level must be an object"),
    ("check", "cases-not-object", lambda e: ["check", "--reference-dir", str(e.ref_with("cases_list", {"cases": [1]}))],
     "'cases' must be an object"),
    ("check", "expected-not-number", lambda e: ["check", "--reference-dir", str(e.ref_with("str", {"cases": {
        "evaluate_a": {"expected": {"mAP": "high"}}}}))], "cases.evaluate_a.expected.mAP: expected a number"),
    ("check", "negative-tolerance", lambda e: ["check", "--reference-dir", str(e.ref_with("tol", {"cases": {
        "evaluate_a": {"tolerance": -1, "expected": {"mAP": 0.75}}}}))], "cases.evaluate_a.tolerance"),
    ("check", "invalid-json", lambda e: ["check", "--reference-dir", str(e.ref_with("badjson", '{"cases": {'))],
     "invalid JSON"),
    ("check", "reference-dir-is-file", lambda e: ["check", "--reference-dir", str(e.file)], "--reference-dir is a file"),
    ("check", "unknown-case-in-file", lambda e: ["check", "--reference-dir", str(e.ref_with("unk", {"cases": {
        "evaluate_z": {"expected": {"mAP": 1}}}}))], "cases: unknown case 'evaluate_z'"),
    # ---- tables (12)
    ("tables", "metrics-missing", lambda e: e.tables(metrics=e.root / "nometrics"), "--metrics: no such folder"),
    ("tables", "metrics-empty", lambda e: e.tables(metrics=e.folder), "no metrics files"),
    ("tables", "metrics-is-file", lambda e: e.tables(metrics=e.file), "--metrics: is a file"),
    ("tables", "metrics-corrupt-json", lambda e: e.tables(metrics=e.metrics_with("corrupt", '{"New": {"F2": 0.')),
     "val.json: corrupt or truncated metrics JSON"),
    ("tables", "metrics-binary", lambda e: e.tables(metrics=e.metrics_with("bin", bytes(range(256)))), "val.json"),
    ("tables", "metrics-wrong-shape", lambda e: e.tables(metrics=e.metrics_with("shape", [1, 2])), "must be an object"),
    ("tables", "metrics-missing-block", lambda e: e.tables(metrics=e.metrics_with("block", {"Main": {"mAP": 1}})),
     "missing the official 'New' block"),
    ("tables", "metrics-non-numeric", lambda e: e.tables(metrics=e.metrics_with("nonnum", {
        "New": {"F2": "x", "F1_Normal": 0.5}, "Main": {"mAP": 0.5}})), "New.F2: expected a number"),
    ("tables", "params-missing", lambda e: e.tables(params=e.root / "noparams.yaml"), "--params: no such file"),
    ("tables", "runs-missing", lambda e: e.tables(runs=e.root / "noruns"), "--runs: no such folder"),
    ("tables", "out-is-file", lambda e: e.tables(out=e.file), "--out is a file"),
    ("tables", "bootstrap-zero", lambda e: e.tables(bootstrap=0), "--bootstrap: must be >= 1"),
    # ---- plots (6)
    ("plots", "metrics-missing", lambda e: e.tables("plots", metrics=e.root / "nometrics"), "--metrics: no such folder"),
    ("plots", "metrics-empty", lambda e: e.tables("plots", metrics=e.folder), "no metrics files"),
    ("plots", "metrics-corrupt-json", lambda e: e.tables("plots", metrics=e.metrics_with("corrupt2", "{")),
     "corrupt or truncated metrics JSON"),
    ("plots", "metrics-wrong-shape", lambda e: e.tables("plots", metrics=e.metrics_with("shape2", "3")), "must be an object"),
    ("plots", "prepared-missing", lambda e: e.tables("plots", prepared=e.root / "noprep"), "--prepared: no such folder"),
    ("plots", "out-is-file", lambda e: e.tables("plots", out=e.file), "--out is a file"),
]


def _bad_label_source(env: Env) -> Path:
    d = env.root / "badlabels"
    if not d.exists():
        for f in (REPO / "data" / "splits").glob("SewerML_*_sub_0.0625.csv"):
            lines = f.read_text().splitlines()
            head = lines[0].split(",")
            row = lines[1].split(",")
            row[head.index("RB")] = "x"
            _write(d / f.name, "\n".join([lines[0], ",".join(row), *lines[2:50]]) + "\n")
    return d


def _bad_source(env: Env) -> Path:
    d = env.root / "badsrc"
    if not d.exists():
        shutil.copytree(_synth_src(env), d)
        f = d / "SewerML_Train.csv"
        lines = f.read_text().splitlines()
        head = lines[0].split(",")
        row = lines[2].split(",")
        row[head.index("RB")] = "7"
        lines[2] = ",".join(row)
        f.write_text("\n".join(lines) + "\n")
    return d


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    return Env(tmp_path_factory.mktemp("corpus"))


@pytest.mark.parametrize("command, case, argv, expected", CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(env, capsys, command, case, argv, expected):
    args = argv(env)
    capsys.readouterr()
    before = sorted(p for p in env.out.rglob("*")) if env.out.exists() else []
    rc = main(args)
    cap = capsys.readouterr()
    err = cap.err
    assert rc == 2, (args, err, cap.out)
    assert err.startswith("sewerbench: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err and "unexpected" not in err, err
    assert expected in err, err
    after = sorted(p for p in env.out.rglob("*")) if env.out.exists() else []
    assert after == before, "a refused command wrote output"


def test_corpus_covers_every_command():
    counts: dict[str, int] = {}
    for command, *_ in CASES:
        counts[command] = counts.get(command, 0) + 1
    assert set(counts) == {"synth", "prepare", "combine", "check", "tables", "plots"}
    assert min(counts.values()) >= 6


# ----------------------------------------------------------------------------- CLI behaviour
def test_debug_shows_the_traceback(env, capsys):
    rc = main(["--debug", *env.combine(s1=env.root / "none.csv")])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback (most recent call last)" in err and err.rstrip().endswith("no such file")
    rc = main([*env.combine(s1=env.root / "none.csv"), "--debug"])  # after the command name too
    assert rc == 2 and "Traceback" in capsys.readouterr().err


def test_unexpected_errors_are_one_line(monkeypatch, capsys, env):
    import benchmark.commands.combine as cmd

    def boom(args):
        raise KeyError("surprise")

    monkeypatch.setattr(cmd, "run", boom)
    rc = main(env.combine())
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "KeyError" in err and "--debug" in err

    def oserror(args):
        raise PermissionError(13, "Permission denied", "/root/x.csv")

    monkeypatch.setattr(cmd, "run", oserror)
    rc = main(env.combine())
    assert rc == 2 and capsys.readouterr().err == "sewerbench: error: /root/x.csv: Permission denied\n"


# ----------------------------------------------------------------------------- image modes
def _png16(path: Path, arr: np.ndarray) -> Path:
    """Write a 16-bit PNG (grey, grey+alpha, RGB or RGBA) with a minimal encoder."""
    import struct
    import zlib

    h, w, c = arr.shape
    ctype = {1: 0, 2: 4, 3: 2, 4: 6}[c]
    raw = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(h))

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, ctype, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    return path


def test_every_image_mode_becomes_correct_rgb(tmp_path):
    from benchmark.data.cache import load_rgb

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, size=(6, 8, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    assert np.array_equal(load_rgb(tmp_path / "rgb.png"), rgb)  # 8-bit RGB exactly as stored
    with Image.open(tmp_path / "rgb.png") as im:  # and exactly what PIL's convert gives
        assert np.array_equal(load_rgb(tmp_path / "rgb.png", (4, 5)),
                              np.array(im.convert("RGB").resize((5, 4), Image.Resampling.BILINEAR)))
    grey16 = rng.integers(0, 65536, size=(6, 8, 1), dtype=np.uint16)
    got = load_rgb(_png16(tmp_path / "g16.png", grey16))
    assert got.dtype == np.uint8 and np.array_equal(got, np.repeat(grey16 >> 8, 3, axis=2))
    rgb16 = rng.integers(0, 65536, size=(6, 8, 3), dtype=np.uint16)
    assert np.array_equal(load_rgb(_png16(tmp_path / "c16.png", rgb16)), (rgb16 >> 8).astype(np.uint8))
    rgba16 = rng.integers(0, 65536, size=(6, 8, 4), dtype=np.uint16)
    assert np.array_equal(load_rgb(_png16(tmp_path / "a16.png", rgba16)), (rgba16[..., :3] >> 8).astype(np.uint8))
    la16 = rng.integers(0, 65536, size=(6, 8, 2), dtype=np.uint16)
    assert np.array_equal(load_rgb(_png16(tmp_path / "la16.png", la16)), np.repeat(la16[..., :1] >> 8, 3, axis=2))
    grey = rgb[..., 0]
    Image.fromarray(grey, "L").save(tmp_path / "l.png")
    assert np.array_equal(load_rgb(tmp_path / "l.png"), np.repeat(grey[..., None], 3, axis=2))
    Image.fromarray(np.dstack([grey, grey]), "LA").save(tmp_path / "la.png")
    assert np.array_equal(load_rgb(tmp_path / "la.png"), np.repeat(grey[..., None], 3, axis=2))
    Image.fromarray(np.dstack([rgb, np.full_like(grey, 7)]), "RGBA").save(tmp_path / "rgba.png")
    assert np.array_equal(load_rgb(tmp_path / "rgba.png"), rgb)
    pal = Image.fromarray(rgb).quantize(8)
    pal.save(tmp_path / "p.png")
    assert np.array_equal(load_rgb(tmp_path / "p.png"), np.array(pal.convert("RGB")))
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.jpg")
    assert load_rgb(tmp_path / "cmyk.jpg").shape == (6, 8, 3)
    Image.fromarray(grey > 128).save(tmp_path / "bw.png")
    assert set(np.unique(load_rgb(tmp_path / "bw.png"))) <= {0, 255}


def test_unsupported_and_corrupt_images_are_refused_by_name(tmp_path):
    from benchmark.data.cache import load_rgb
    from benchmark.data.dataset import SewerMLDataset
    from benchmark.data.images import ImageIndex

    Image.fromarray(np.zeros((4, 4), np.float32), "F").save(tmp_path / "float.tif")
    with pytest.raises(SewerbenchError, match=r"float.tif: unsupported image mode 'F'"):
        load_rgb(tmp_path / "float.tif")
    # through the dataset (no cache): a truncated file is named
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "00000001.png")
    data = (tmp_path / "00000001.png").read_bytes()
    (tmp_path / "00000002.png").write_bytes(data[: len(data) // 2])
    import pandas as pd
    ds = SewerMLDataset(pd.DataFrame({"Filename": ["00000001.png", "00000002.png"]}), ImageIndex(tmp_path))
    assert ds.load(0).shape == (8, 8, 3)
    with pytest.raises(SewerbenchError, match=r"00000002.png: unreadable image"):
        ds.load(1)


def test_16bit_image_in_the_cache_is_scaled_not_white(tmp_path):
    from benchmark.data.cache import ImageCache
    from benchmark.data.images import ImageIndex

    img = tmp_path / "imgs"
    img.mkdir()
    g = np.full((8, 8, 1), 30000, np.uint16)
    _png16(img / "00000001.png", g)
    c = ImageCache.build(tmp_path / "cache", ["00000001.png"], ImageIndex(img), 8, workers=1)
    assert int(c.get("00000001.png").max()) == 30000 >> 8  # 117, not 255 (nearly white)
