"""``sewerbench bench``: runs with --quick on tiny inputs, writes perf.json (documented keys)
and perf.md (a table), refuses bad arguments with a one-line error (exit 2). No timed
assertions: the benchmark reports speed, the tests check the report's shape."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from benchmark import bench
from benchmark import metrics as M
from benchmark.cli import main

QUICK = ["bench", "--quick", "--methods", "tiny_cnn", "--sizes", "smoke", "--rows", "3000",
         "--resamples", "20", "--workers", "0", "--reps", "1", "--warmup", "0"]


def test_quick_run_writes_json_and_markdown(tmp_path, capsys):
    out = tmp_path / "res"
    assert main([*QUICK, "--out", str(out)]) == 0
    rep = json.loads((out / bench.PERF_JSON).read_text())
    assert set(bench.TOP_KEYS) <= set(rep)
    assert rep["quick"] is True and rep["format"] == bench.FORMAT
    for key in ("cpu", "logical_cpus", "torch_threads", "torch", "cuda", "gpu", "cpu_capability"):
        assert key in rep["machine"]
    # an fp32 row, and a bf16 autocast row where the CPU has native bf16 (AVX512-BF16 / AMX)
    precisions = ["fp32", "bf16"] if bench.cpu_supports_bf16() else ["fp32"]
    assert [r["precision"] for r in rep["models"]] == precisions
    assert rep["machine"]["cpu_bf16"] is bench.cpu_supports_bf16()
    assert any(n.startswith("no bf16 rows") for n in rep["notes"]) is (precisions == ["fp32"])
    row = rep["models"][0]
    assert set(row) == set(bench.MODEL_KEYS)
    assert row["method"] == "tiny_cnn" and row["size"] == "smoke" and row["image_size"] == 64
    assert row["e2e_source"] == "cache 64px, train aug randaugment (family default)"   # no tiny recipe
    assert row["params"] > 0 and row["gflops_per_image"] > 0 and row["peak_rss_mb"] > 0
    for key in ("train_model", "train_e2e", "infer_model", "infer_e2e"):
        t = row[key]
        assert t["unit"] == "images/s" and t["reps"] == 1 and t["min"] <= t["median"] <= t["max"]
    assert {(r["source"], r["image_size"]) for r in rep["loader"]} == {("png", 64), ("cache", 64), ("jpeg", 64)}
    assert all(r["frame"] == "704x576" for r in rep["loader"])
    by = {r["source"]: r for r in rep["loader"]}
    assert by["cache"]["bytes_per_image"] > 64 * 64 * 3 and "bytes_per_image" not in by["png"]
    assert 0 < by["jpeg"]["bytes_per_image"] < by["cache"]["bytes_per_image"]
    g = by["cache"]["sewerml_cache_gb"]
    assert g["full"] == pytest.approx(by["cache"]["bytes_per_image"] * 1_300_201 / 1e9)
    assert g["sub_0.0625"] < g["full"]
    me = rep["metrics"]
    assert me["rows"] == 3000 and me["classes"] == 17 and me["identical"] is True
    assert me["official"]["unit"] == "s" and me["speedup"] > 0
    assert rep["bootstrap"]["resamples"] == 20 and rep["bootstrap"]["seconds"]["unit"] == "s"
    assert rep["synthetic"]["rate"]["unit"] == "images/s"
    md = (out / bench.PERF_MD).read_text()
    assert "| method | size | px |" in md and "| tiny_cnn | smoke | 64 | fp32 |" in md
    assert "| PNG 704x576 | 64 |" in md and "all metrics, 3,000 x 17" in md
    assert "| JPEG q95 shard cache (64 px) | 64 |" in md
    assert md == bench.to_markdown(rep)
    assert "| tiny_cnn |" in capsys.readouterr().out
    assert not [p for p in out.iterdir() if p.name.startswith(".")]   # no temporary files left


@pytest.mark.parametrize("args, needle", [
    (["--methods", "nosuch"], "--methods: unknown method 'nosuch'"),
    (["--methods", "myrans2018"], "not a torch model"),
    (["--methods", "tiny_cnn,,xie2019"], "--methods: empty name"),
    (["--sizes", "huge"], "--sizes: unknown size 'huge'"),
    (["--device", "tpu"], "--device: choose cpu or cuda"),
    (["--reps", "0"], "--reps: must be >= 1"),
    (["--batch", "0"], "--batch: must be >= 1"),
    (["--threads", "0"], "--threads: must be >= 1"),
    (["--reference", "nosuch=/x"], "--reference: no reference code is known for 'nosuch'"),
    (["--reference", "maq2l"], "--reference: give METHOD=DIR"),
    (["--reference", "maq2l=/nonexistent/MA-Q2L"], "not a checkout of shengyu27/MA-Q2L (no lib/models/MAQ2L.py)"),
])
def test_bad_arguments_are_one_line_errors(tmp_path, capsys, args, needle):
    assert main(["bench", "--quick", "--out", str(tmp_path / "r"), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("sewerbench: error:") and needle in err and "\n" not in err
    assert not (tmp_path / "r").exists()


def test_out_is_a_file_is_refused(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    assert main(["bench", "--quick", "--methods", "tiny_cnn", "--out", str(f)]) == 2
    assert "--out must be a folder" in capsys.readouterr().err
    assert f.read_text() == "x"


def test_cuda_refused_without_a_device(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    assert main(["bench", "--device", "cuda", "--methods", "tiny_cnn", "--out", str(tmp_path)]) == 2
    assert "no CUDA device" in capsys.readouterr().err


def test_summary_median_and_spread():
    s = bench.summary([0.5, 0.25, 1.0], per=2)
    assert s == {"median": 4.0, "min": 2.0, "max": 8.0, "reps": 3, "unit": "images/s"}
    assert bench.summary([3.0, 1.0], rate=False)["median"] == 2.0


def _ap_by_argsort(col, pos):
    order = np.argsort(col)[::-1]
    ranks = np.flatnonzero(pos[order]) + 1.0
    if ranks.size == 0:
        return 0.0
    return float(np.cumsum(np.arange(1, ranks.size + 1) / ranks)[-1] / ranks.size)


def test_fast_ap_path_equals_the_argsort_walk():
    # the sort-only AP path (no positive tied with a negative) and the argsort fallback give
    # exactly the official walk's value, for tie-free, positive-only-tie and mixed-tie columns
    rng = np.random.default_rng(0)
    for trial in range(300):
        n = int(rng.integers(1, 400))
        col = rng.random(n)
        if trial % 3 == 1:
            col = col.round(int(rng.integers(1, 3)))          # mixed ties
        pos = rng.random(n) < rng.choice([0.0, 0.05, 0.3, 1.0])
        if trial % 3 == 2:                                    # ties among positives only
            col[pos] = np.round(col[pos], 1) + 2.0
        assert M._ap_1d(np.ascontiguousarray(col), pos) == _ap_by_argsort(col, pos), trial


def test_smoke_loader_settings_are_the_smoke_profiles():
    """The smoke rows' end-to-end loader is the default profile's (batch, workers)."""
    import yaml

    from benchmark.bench import PAPER_WORKERS, SMOKE_LOADER, Settings

    profiles = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())["profiles"]
    assert SMOKE_LOADER == {k: profiles["smoke"][k] for k in SMOKE_LOADER}
    assert PAPER_WORKERS == profiles["paper"]["workers"]
    st = Settings()
    assert st.batch_for("smoke") == SMOKE_LOADER["batch_size"] and st.n_workers("smoke") == 0
    assert Settings(workers=3).n_workers("smoke") == 3 and Settings(quick=True).batch_for("paper") == 2
    assert Settings(quick=True).batch_for("smoke") == 32 and Settings(quick=True, batch=4).batch_for("smoke") == 4


def test_end_to_end_rows_train_with_the_profiles_augmentation():
    """The e2e rows use each profile's resolved training augmentation (smoke: Q2L / MA-Q2L /
    ASL without RandAugment and Cutout, so their batches take the deterministic batched fetch;
    the Sewer-ML CNNs keep flip + colour jitter; paper: the references' RandAugment)."""
    import yaml

    from methods.registry import get_spec

    params = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())
    labels = {(m, z): bench.aug_label(bench.profile_aug(params, m, z) or {}, get_spec(m).transform)
              for m in ("q2l", "maq2l", "asl_tresnet_l", "xie2019", "resnet101") for z in ("smoke", "paper")}
    assert labels == {("q2l", "smoke"): "none", ("maq2l", "smoke"): "none", ("asl_tresnet_l", "smoke"): "none",
                      ("q2l", "paper"): "randaugment", ("maq2l", "paper"): "randaugment",
                      ("asl_tresnet_l", "paper"): "randaugment+cutout",
                      ("xie2019", "smoke"): "flip+jitter", ("resnet101", "smoke"): "flip+jitter",
                      ("xie2019", "paper"): "flip+jitter", ("resnet101", "paper"): "flip+jitter"}
    assert bench.profile_aug(None, "q2l", "smoke") is None
    # the image source follows the profile's use_cache (Chen2018's 299 px smoke runs decode PNGs)
    sources = {(m, z): bench.e2e_source(bench.profile_run(params, m, z), get_spec(m), z)
               for m in ("q2l", "chen2018", "xie2019") for z in ("smoke", "paper")}
    assert sources == {("q2l", "smoke"): "cache", ("chen2018", "smoke"): "png", ("xie2019", "smoke"): "cache",
                       ("q2l", "paper"): "png", ("chen2018", "paper"): "png", ("xie2019", "paper"): "png"}
    assert bench.e2e_source(None, get_spec("q2l"), "smoke") == "cache"
    assert bench.e2e_source(None, get_spec("q2l"), "paper") == "png"
    assert bench.profile_aug(params, "tiny_cnn", "smoke") is None      # no recipe: family defaults
    from benchmark.data.transforms import build_transform, deterministic_steps

    for method, det in (("q2l", True), ("maq2l", True), ("xie2019", False)):
        aug = bench.profile_aug(params, method, "smoke")
        tf = build_transform(get_spec(method).transform, 64, True, **aug)
        assert (deterministic_steps(tf) is not None) is det, method


def test_missing_params_file_is_a_one_line_error(tmp_path, capsys):
    assert main([*QUICK, "--params", str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("sewerbench: error:") and "nope.yaml" in err and "\n" not in err
    assert not (tmp_path / "r").exists()


def test_default_methods_are_the_registrys_torch_methods_without_the_toy():
    from methods.registry import REGISTRY

    names = bench.default_methods()
    assert "tiny_cnn" not in names and {"maq2l", "q2l", "asl_tresnet_l", "xie2019", "chen2018"} <= set(names)
    assert all(REGISTRY[n].kind == "torch" for n in names)
