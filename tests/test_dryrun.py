"""The paper dry run (`sewerbench dryrun`, benchmark/dryrun.py): the mini Sewer-ML folder, the
params rewrite, the random pretrained files, and (slow) the paper pipeline end to end."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml
from PIL import Image

from benchmark import dryrun
from benchmark.classes import CLASS_CODES, CSV_COLUMNS
from benchmark.cli import main
from benchmark.config import load_params, resolve_run
from benchmark.data.splits import is_synthetic, prepare
from benchmark.errors import SewerbenchError

ROOT = Path(__file__).resolve().parents[1]
PARAMS = load_params(ROOT / "params.yaml")
SUBSETS = ROOT / "data" / "splits"
#: The CI part of the dry run: MA-Q2L, Q2L and the two-stage Benchmark's stages (+ its combo).
CI_RUNS = ["maq2l_full", "q2l_full", "tresnet_l_stage2_full", "xie2019_binary_full"]


@pytest.fixture(scope="module")
def mini(tmp_path_factory):
    root = tmp_path_factory.mktemp("dry") / "sewerml"
    return root, dryrun.build_mini_sewerml(root, images=8, seed=0)


def test_mini_sewerml_is_paper_shaped(mini):
    root, summary = mini
    assert sorted(p.name for p in root.iterdir()) == ["SewerML_Test.csv", "SewerML_Train.csv",
                                                      "SewerML_Val.csv", "images"]
    assert not (root / "meta.json").exists() and not is_synthetic(root)
    frames = {s: pd.read_csv(root / f) for s, f in dryrun.CSV_FILES.items()}
    assert list(frames["train"].columns) == list(CSV_COLUMNS)
    assert list(frames["val"].columns) == list(CSV_COLUMNS)
    assert list(frames["test"].columns) == ["Filename"]          # as the public test CSV
    assert {s: len(f) for s, f in frames.items()} == {"train": 8, "val": 4, "test": 2}
    names = [set(f["Filename"]) for f in frames.values()]
    assert not (names[0] & names[1] or names[0] & names[2] or names[1] & names[2])
    # real label rows (and filenames) of the published subset files
    for split, sub in (("train", "SewerML_Train_sub_0.0625.csv"), ("val", "SewerML_Val_sub_0.0625.csv")):
        src = pd.read_csv(SUBSETS / sub).set_index("Filename")
        df = frames[split].set_index("Filename")
        assert (src.loc[df.index, df.columns] == df).all().all()
        assert 0 < df["Defect"].sum() < len(df)                   # normal and defective frames
    assert frames["train"][list(CLASS_CODES)].to_numpy().any(axis=0).sum() >= 8
    # PNG frames of real sizes, spread over several sub-folders
    pngs = sorted((root / "images").rglob("*.png"))
    assert sorted(p.name for p in pngs) == sorted(set().union(*names))
    sizes = {Image.open(p).size for p in pngs}
    assert sizes <= set(dryrun.FRAME_SIZES) and len(sizes) >= 3 and (704, 576) in sizes
    for split in ("train", "val"):
        used = {p.parent.name for p in pngs if p.name in set(frames[split]["Filename"])}
        assert len(used) >= 2 and all(u.startswith(split.capitalize()) for u in used)
    assert summary["rows"] == {"train": 8, "val": 4, "test": 2}


def test_mini_sewerml_prepares_as_real_data(mini, tmp_path):
    root, _ = mini
    with pytest.raises(SewerbenchError, match="subset-rule systematic"):
        prepare(root, tmp_path / "p0", subset_dir=SUBSETS)      # auto = published for real data
    # params mode: data.subset_rule (the dry run's setting)
    params = {**PARAMS, "profile": "paper",
              "data": {**PARAMS["data"], "sewerml_root": str(root), "subset_rule": "systematic"}}
    pfile = tmp_path / "params.yaml"
    pfile.write_text(yaml.safe_dump(params, sort_keys=False))
    assert main(["prepare", "--params", str(pfile), "--out", str(tmp_path / "p1")]) == 0
    info = json.loads((tmp_path / "p1" / "splits.json").read_text())
    assert info["kind"] == "real" and info["subset"]["rule"] == "systematic" and info["images_checked"]
    assert info["splits"]["full/test"]["rows"] == 2 and "full/test_gt" not in info["splits"]
    pfile.write_text(yaml.safe_dump({**params, "data": {**params["data"], "subset_rule": "every16"}}))
    assert main(["prepare", "--params", str(pfile), "--out", str(tmp_path / "p2")]) == 2


def test_dryrun_params_rewrite(tmp_path):
    weights = {"maq2l": str(tmp_path / "r101.pth"), "q2l": str(tmp_path / "r101.pth")}
    p = dryrun.dryrun_params(PARAMS, sewerml_root=tmp_path / "sewerml", runs=CI_RUNS, steps=2,
                             batch_size=4, pretrained=weights)
    assert PARAMS["profile"] == "smoke" and "max_steps_per_epoch" not in PARAMS["profiles"]["paper"]
    assert p["profile"] == "paper"
    assert p["data"]["sewerml_root"] == str((tmp_path / "sewerml").resolve())
    assert p["data"]["subset_rule"] == "systematic" and p["data"]["paper"]["source"] == "sewerml_root"
    assert list(p["runs"]) == [r for r in PARAMS["runs"] if r in CI_RUNS]
    assert list(p["combos"]) == ["benchmark_full"]           # the only combo whose stages are kept
    assert p["plots"]["cam_runs"] == ["maq2l_full", "q2l_full"]
    assert set(p["plots"]["f2_runs"]) <= set(p["runs"]) | {"benchmark_full"}
    assert p["tables"]["ablation_reference"] == {"full": "maq2l_full"}
    cfg = resolve_run(p, "maq2l_full")
    assert (cfg.size, cfg.image_size, cfg.profile) == ("reference", 448, "paper")
    assert cfg.pretrained == weights["maq2l"]
    rt = cfg.runtime
    assert (rt.device, rt.workers, rt.amp, rt.max_steps_per_epoch, rt.eval_batch_size) == ("cpu", 0, False, 2, 4)
    assert cfg.batch_size == 4 and cfg.epochs == 1
    # the recipe's other values are the reference ones
    ref = resolve_run({**PARAMS, "profile": "paper"}, "maq2l_full")
    assert cfg.optimizer == ref.optimizer and cfg.loss == ref.loss and cfg.ema == ref.ema
    assert cfg.aug == ref.aug and cfg.selection == ref.selection and dict(cfg.model) == dict(ref.model)
    s2 = resolve_run(p, "tresnet_l_stage2_full")
    assert (s2.size, s2.image_size, s2.pretrained, s2.train_on) == ("reference", 224, False, "defect_only")
    assert s2.optimizer.name == "sgd" and s2.loss.pos_weight == "auto"
    assert dryrun.pretrained_methods(dryrun.dryrun_params(PARAMS, sewerml_root=tmp_path)) == [
        "maq2l", "q2l", "asl_tresnet_l"]
    # a combo name brings its stages; unknown names are refused
    assert set(dryrun.select_runs(PARAMS, ["benchmark_full", "maq2l_sub"])[0]) == {
        "xie2019_binary_full", "tresnet_l_stage2_full", "maq2l_sub"}
    with pytest.raises(SewerbenchError, match="no run or combo named 'maq2l_fll'.*maq2l_full"):
        dryrun.select_runs(PARAMS, ["maq2l_fll"])
    with pytest.raises(SewerbenchError, match="at least one maq2l run"):
        dryrun.select_runs(PARAMS, ["xie2019_full"])          # tables would miss results/ablation.*
    # the project: params.yaml, dvc.yaml and every code dependency of the stages
    deps = dryrun.write_project(tmp_path / "project", p, SUBSETS)
    assert {"methods", "benchmark/train", "data/splits"} <= set(deps)
    assert load_params(tmp_path / "project" / "params.yaml") == p
    dvc = yaml.safe_load((tmp_path / "project" / "dvc.yaml").read_text())
    assert "runs/maq2l_full" in dvc["stages"]["plots"]["deps"]
    assert dryrun.expected_stages(p)[-2:] == ["tables", "plots"]
    assert "evaluate_combo@benchmark_full" in dryrun.expected_stages(p)
    # --max-seeds: maq2l_full's seeds [0, 1, 2] cut to the first two by default (one seed stage
    # pair), to the first with 1, kept with 0
    assert PARAMS["runs"]["maq2l_full"]["seeds"] == [0, 1, 2]
    assert p["runs"]["maq2l_full"]["seeds"] == [0, 1]
    assert {"train_seed@maq2l_full_seed1", "evaluate_seed@maq2l_full_seed1"} <= set(dryrun.expected_stages(p))
    assert "train_seed@maq2l_full_seed2" not in dryrun.expected_stages(p)
    one = dryrun.dryrun_params(PARAMS, sewerml_root=tmp_path, runs=CI_RUNS, max_seeds=1)
    assert one["runs"]["maq2l_full"]["seeds"] == [0]
    assert not [k for k in dryrun.expected_stages(one) if "_seed" in k]
    every = dryrun.dryrun_params(PARAMS, sewerml_root=tmp_path, runs=CI_RUNS, max_seeds=0)
    assert every["runs"]["maq2l_full"]["seeds"] == [0, 1, 2]


def test_random_pretrained_files_load_into_the_builders(tmp_path):
    """timm-layout TResNet-L (ASL's ImageNet file) and torchvision ResNet-101 files."""
    from methods.registry import build

    paths = dryrun.write_pretrained_weights(tmp_path, ["asl_tresnet_l", "maq2l", "kssnet"])
    assert paths["maq2l"] == paths["kssnet"] != paths["asl_tresnet_l"]
    assert len(list(tmp_path.iterdir())) == 2
    model = build("asl_tresnet_l", size="reference", num_classes=17, pretrained=paths["asl_tresnet_l"])
    import torch
    state = torch.load(paths["asl_tresnet_l"], weights_only=True)
    key = "body.layer1.0.conv1.conv.weight"
    assert torch.equal(model.state_dict()[key], state[key])
    rv = [v for k, v in state.items() if k.endswith("running_var")]
    assert rv and not all(torch.all(v == 1) for v in rv)        # BN statistics measured, not init
    with pytest.raises(SewerbenchError, match="no weight layout"):
        dryrun.write_pretrained_weights(tmp_path, ["chen2018"])


def test_dryrun_command_refuses_bad_input(tmp_path, capsys):
    assert main(["dryrun", "--out", str(tmp_path / "d"), "--runs", "nope",
                 "--params", str(ROOT / "params.yaml")]) == 2
    assert "no run or combo named 'nope'" in capsys.readouterr().err
    assert main(["dryrun", "--out", str(tmp_path / "d"), "--images", "2",
                 "--params", str(ROOT / "params.yaml")]) == 2
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    assert main(["dryrun", "--out", str(foreign), "--runs", "maq2l_sub",
                 "--params", str(ROOT / "params.yaml")]) == 2
    assert "did not create" in capsys.readouterr().err
    assert (foreign / "notes.txt").read_text() == "mine"
    assert main(["dryrun", "--out", str(foreign), "--resume"]) == 2
    assert "no interrupted `sewerbench dryrun`" in capsys.readouterr().err


@pytest.mark.slow
def test_paper_dry_run_end_to_end(tmp_path):
    """The CI part of the paper dry run, at reference sizes on CPU: MA-Q2L, Q2L, TResNet-L
    stage 2, Xie2019 binary and the Benchmark combination, every stage synth -> plots. One
    seed per run (--max-seeds 1): a seed stage is another 448 px MA-Q2L training (~85 s);
    the cut to 2 seeds and its stages are checked in test_dryrun_params_rewrite, seed stages
    and their tables in tests/test_seeds.py."""
    out = tmp_path / "dry"
    try:
        s = dryrun.run_dryrun(out, params_path=ROOT / "params.yaml", runs=CI_RUNS, images=8,
                              steps=2, batch_size=2, label_source=SUBSETS, echo=None, max_seeds=1)
        project = out / "project"
        assert s["stages"] == dryrun.expected_stages(load_params(project / "params.yaml"))
        assert {"train@maq2l_full", "combine@benchmark_full", "evaluate_combo@benchmark_full",
                "tables", "plots"} <= set(s["seconds"])
        # maq2l_full's seeds [0, 1, 2] cut to the first (--max-seeds 1): no seed stage
        assert not [k for k in s["seconds"] if k.startswith(("train_seed@", "evaluate_seed@"))]
        for name in ("table3", "ablation", "sewerml_table4", "sewerml_table5", "benchmark_metrics"):
            for ext in ("md", "csv", "tex"):
                assert (project / "results" / f"{name}.{ext}").stat().st_size > 0
        table3 = (project / "results" / "table3.md").read_text()
        assert "profile `paper`" in table3 and "run `maq2l_full` on `val`" in table3
        assert "run `benchmark_full` on `val`" in table3
        assert s["plots"]
        # reference sizes, local weights, the step cap
        t = s["trained"]
        assert t["maq2l_full"]["params"] == t["maq2l_full"]["reference_num_params"] == 227_157_201
        assert t["q2l_full"]["params"] == 193_543_377
        assert t["tresnet_l_stage2_full"]["params"] == 53_597_617
        assert all(v["train_images_seen"] == 4 for v in t.values())   # 2 steps x batch 2
        cfg = json.loads((project / "runs" / "maq2l_full" / "config.json").read_text())
        assert cfg["image_size"] == 448 and cfg["pretrained"].endswith("resnet101_torchvision_random.pth")
        splits = json.loads((project / "data" / "prepared" / "splits.json").read_text())
        assert splits["kind"] == "real" and splits["subset"]["rule"] == "systematic"
        assert (out / "dryrun.json").is_file() and "Running stage 'plots'" in (out / "dryrun.log").read_text()
        # a second invocation (--resume) finds every stage finished (hardlink cache) and reruns none
        again = dryrun.run_dryrun(out, resume=True, echo=None)
        assert again["resumed"] and again["seconds"] == s["seconds"]
        assert (out / "dryrun.log").read_text().count("Running stage 'train@maq2l_full'") == 1
    finally:   # GBs of checkpoints (hardlinked into the DVC cache); the logs stay
        for d in ("runs", ".dvc/cache", "../weights"):
            shutil.rmtree(out / "project" / d, ignore_errors=True)
