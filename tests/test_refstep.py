"""``sewerbench bench --reference``: the authors' code is imported from a checkout without
leaking into the process (placeholders only for its own unresolvable imports, torchvision and
``sys.modules`` restored), gets our weights, and is timed beside ours. The checkouts here are
small stand-in trees the test writes (their builders return our tiny models), so the same
weights give exactly the same logits; the real repositories are not shipped."""
from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

from benchmark import bench, refstep
from benchmark.errors import SewerbenchError

MISSING = "sewerbench_test_module_nobody_has"


def _tree(root: Path, method: str, body: str = "") -> Path:
    ref = refstep.REFERENCES[method]
    f = ref.builder_file(root)
    f.parent.mkdir(parents=True)
    pkg = ref.module.split(".")[0]
    helper = root / ref.path_entry / pkg / "helper.py"
    helper.write_text(
        "import torchvision\n"
        "import methods\n"
        "def build(name, args):\n"
        "    torchvision.models.resnet18(pretrained=True)   # the old API: nothing is downloaded\n"
        "    return methods.build(name, size='tiny', image_size=args.img_size)\n")
    f.write_text(
        f"import {MISSING}                       # a module the ResNet path never uses\n"
        f"from {MISSING}.sub import Config\n"
        f"class Cfg(Config):\n    pass\n"
        f"from {pkg}.helper import build\n"
        f"def {ref.builder}(args):\n"
        f"    print('their build message')\n"
        f"    assert args.backbone == 'resnet101' and args.hidden_dim == 2048 and args.num_class == 17\n"
        f"{body or f'    return build({method!r}, args)'}\n")
    return root


def _state():
    import torchvision.models as tvm
    return (sorted(sys.path), [f for f in sys.meta_path if type(f).__module__ == refstep.__name__],
            tvm.resnet18, tvm.resnet101)


@pytest.mark.parametrize("method", ["maq2l", "q2l"])
def test_reference_step_row_and_nothing_leaks(tmp_path, capsys, method):
    root = _tree(tmp_path / method, method)
    before, mods = _state(), set(sys.modules)
    row = refstep.bench_reference(method, root.resolve(), warmup=0, reps=2, size="tiny",
                                  image_size=64, batch=2)
    assert _state() == before
    assert "their build message" not in capsys.readouterr().out   # their prints go to the log
    assert not [m for m in set(sys.modules) - mods
                if m.split(".")[0] in ("lib", "models", MISSING) or "helper" in m]
    with pytest.raises(ModuleNotFoundError):          # outside the tree: still missing
        importlib.import_module(MISSING)
    assert row["method"] == method and row["reference"] == refstep.REFERENCES[method].repo
    assert row["max_abs_logit_diff"] == 0.0            # same weights, same module
    assert row["speedup"] == row["ours"]["median"] / row["theirs"]["median"]
    assert row["ours"]["reps"] == row["theirs"]["reps"] == 2
    kind = "AdamW" if method == "q2l" else "Adam"
    assert row["optimizer"] == {"ours": f"{kind} (fused kernel)", "theirs": f"{kind} (default kernel)"}
    md = bench.to_markdown({**_report(), "reference_steps": [row]})
    assert f"| {method} | {row['reference']} | 64 | 2 |" in md and "x |" in md


def test_reference_optimizer_groups_as_their_main():
    import torch

    m = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    o = refstep.reference_optimizer(m, refstep.REFERENCES["maq2l"], batch=16)
    assert type(o) is torch.optim.Adam and not o.defaults.get("fused")
    assert [len(g["params"]) for g in o.param_groups] == [3, 1]       # biases + BN weight / Linear weight
    assert [g["weight_decay"] for g in o.param_groups] == [0.0, 1e-2]
    assert o.param_groups[0]["lr"] == pytest.approx(1e-5 * 16 / 256)   # args.lr_mult = batch / 256
    o = refstep.reference_optimizer(m, refstep.REFERENCES["q2l"], batch=4)
    assert type(o) is torch.optim.AdamW and len(o.param_groups) == 1
    assert o.param_groups[0]["weight_decay"] == 1e-2


def test_their_failures_are_one_line_errors(tmp_path):
    root = _tree(tmp_path / "bad", "maq2l", body="    raise ValueError('no GPU\\nsecond line')")
    with pytest.raises(SewerbenchError, match=r"cannot build lib.models.MAQ2L.build_MAQ2L: ValueError") as e:
        refstep.build_reference("maq2l", root.resolve(), 64)
    assert str(e.value).endswith("ValueError: no GPU")     # one line
    assert "lib" not in sys.modules
    root = _tree(tmp_path / "other", "maq2l",
                 body="    return build('q2l', args)")       # another layout: weights do not load
    with pytest.raises(SewerbenchError, match="weights do not match ours"):
        refstep.bench_reference("maq2l", root.resolve(), 0, 1, size="tiny", image_size=64, batch=2)


def test_parse_references(tmp_path):
    root = _tree(tmp_path / "ma", "maq2l")
    assert refstep.parse_references([f"maq2l={root}"]) == {"maq2l": root.resolve()}
    assert refstep.parse_references(None) == {}
    with pytest.raises(SewerbenchError, match="maq2l given twice"):
        refstep.parse_references([f"maq2l={root}", f"maq2l={root}"])
    with pytest.raises(SewerbenchError, match="not a checkout of SlongLiu/query2labels"):
        refstep.parse_references([f"q2l={root}"])


def _report():
    t = {"median": 1.0, "min": 1.0, "max": 1.0, "reps": 1, "unit": "s"}
    return {"machine": {"cpu": "x", "usable_cpus": 1, "torch_threads": 1, "cpu_capability": "AVX2",
                        "torch": "t", "cuda": None, "numpy": "n", "load_average": [0.0]},
            "settings": {"device": "cpu", "warmup": 0, "reps": 1, "batch": {}, "workers": 0},
            "quick": True, "models": [], "loader": [], "notes": [],
            "metrics": {"rows": 2, "classes": 17, "ours": t, "official": None},
            "bootstrap": {"resamples": 1, "rows": 2, "seconds": t},
            "synthetic": {"width": 1, "height": 1, "rate": {**t, "unit": "images/s"}}}
