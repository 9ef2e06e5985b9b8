"""The registry and ``sewerbench methods``."""
from __future__ import annotations

import json

import pytest

from benchmark.cli import main
from benchmark.commands.methods import count_method
from methods import registry

OWN = ["asl_tresnet_l", "asl_resnet101", "resnet101", "kssnet", "tresnet_m", "tresnet_l",
       "tresnet_xl", "xie2019", "xie2019_binary", "chen2018_binary", "chen2018", "hassan2019",
       "myrans2018_binary", "myrans2018"]


def test_registry_names_and_targets():
    assert set(OWN) <= set(registry.available())
    for name in OWN:
        spec = registry.get_spec(name)
        assert callable(spec.builder())
        assert spec.kind in ("torch", "sklearn")
    with pytest.raises(KeyError, match="unknown method"):
        registry.get_spec("nope")


def test_count_method_reference_and_tiny():
    ref = count_method("xie2019_binary", "reference")
    assert ref == {"total": 9_159_681, "trainable": 9_159_681, "reference": 9_159_681}
    tiny = count_method("tresnet_l", "tiny")
    assert 0 < tiny["total"] < ref["total"] and tiny["reference"] == 53_597_617
    assert count_method("myrans2018", "tiny") == {"total": None, "trainable": None,
                                                  "reference": None}


def test_count_method_reports_unavailable(monkeypatch):
    spec = registry.get_spec("xie2019")
    broken = registry.MethodSpec("xie2019", "methods.does_not_exist:build", spec.family,
                                 spec.transform, spec.image_size, spec.description)
    monkeypatch.setitem(registry.REGISTRY, "xie2019", broken)
    assert count_method("xie2019")["error"].startswith("unavailable: ModuleNotFoundError")


def test_methods_command_lists_everything(capsys):
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    for name in registry.available():
        assert name in out
    assert main(["methods", "--counts", "--size", "tiny", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    rows = {r["name"]: r for r in data["methods"]}
    assert data["size"] == "tiny" and set(rows) == set(registry.available())
    assert rows["hassan2019"]["reference"] == 57_073_489
    assert rows["hassan2019"]["total"] < 57_073_489
