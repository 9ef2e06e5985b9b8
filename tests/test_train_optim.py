"""Optimisers, weight-decay groups, schedules and EMA of the training engine."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from benchmark.errors import SewerbenchError
from benchmark.train.ema import ModelEma
from benchmark.train.optim import (PER_EPOCH, PER_ITERATION, build_optimizer, build_scheduler,
                                   effective_lr, param_groups)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)                 # weight 4-D (decay), bias (no decay)
        self.bn = nn.BatchNorm2d(4)                    # 1-D weight and bias (no decay)
        self.frozen = nn.Linear(4, 4)                  # frozen: in no group
        self.fc = nn.Linear(4, 2)                      # weight 2-D (decay), bias (no decay)
        self.scale = nn.Parameter(torch.ones(1, 2, 3))  # 3-D, no ".bias": decay
        self.query = nn.Parameter(torch.zeros(5))     # 1-D: no decay
        for p in self.frozen.parameters():
            p.requires_grad_(False)


def _names(model, group):
    ids = {id(p) for p in group["params"]}
    return sorted(n for n, p in model.named_parameters() if id(p) in ids)


def test_no_bias_1d_groups_match_reference_add_weight_decay():
    m = Net()
    groups = param_groups(m, 1e-2, "no_bias_1d")
    assert [g["name"] for g in groups] == ["no_decay", "decay"]
    assert [g["weight_decay"] for g in groups] == [0.0, 1e-2]
    assert _names(m, groups[0]) == ["bn.bias", "bn.weight", "conv.bias", "fc.bias", "query"]
    assert _names(m, groups[1]) == ["conv.weight", "fc.weight", "scale"]


def test_all_filter_and_optimisers():
    m = Net()
    groups = param_groups(m, 1e-4, "all")
    assert len(groups) == 1 and len(_names(m, groups[0])) == 8  # frozen excluded
    adam = build_optimizer(m, {"name": "adam", "lr": 1e-5, "weight_decay": 1e-2,
                               "decay_filter": "no_bias_1d"}, 16)
    assert isinstance(adam, torch.optim.Adam) and not isinstance(adam, torch.optim.AdamW)
    assert [g["weight_decay"] for g in adam.param_groups] == [0.0, 1e-2]  # L2 via groups
    adamw = build_optimizer(m, {"name": "adamw", "lr": 1e-4, "weight_decay": 1e-2}, 16)
    assert isinstance(adamw, torch.optim.AdamW) and adamw.param_groups[0]["weight_decay"] == 1e-2
    sgd = build_optimizer(m, {"name": "sgd", "lr": 0.1, "lr_batch_scale": 256, "weight_decay": 1e-4}, 64)
    g = sgd.param_groups[0]
    assert g["lr"] == pytest.approx(0.1 * 64 / 256) and g["momentum"] == 0.9 and g["nesterov"] is False
    assert effective_lr({"lr": 0.1, "lr_batch_scale": 256}, 256) == pytest.approx(0.1)
    with pytest.raises(SewerbenchError):
        build_optimizer(m, {"name": "lamb", "lr": 1}, 1)
    with pytest.raises(SewerbenchError):
        param_groups(m, 0.1, "odd")


def test_adam_l2_decay_differs_from_adamw():
    """Adam_twd adds wd * w to the gradient (L2); AdamW decays the weights directly."""
    torch.manual_seed(0)
    w0 = torch.randn(3, 3)
    outs = []
    for name in ("adam", "adamw"):
        lin = nn.Linear(3, 3, bias=False)
        lin.weight.data.copy_(w0)
        opt = build_optimizer(lin, {"name": name, "lr": 0.1, "weight_decay": 0.5,
                                    "decay_filter": "no_bias_1d"}, 16)
        lin(torch.ones(1, 3)).sum().backward()
        opt.step()
        outs.append(lin.weight.detach().clone())
    assert not torch.allclose(outs[0], outs[1])


def test_onecycle_is_per_iteration_and_multistep_per_epoch():
    m = Net()
    opt = build_optimizer(m, {"name": "adam", "lr": 1e-3}, 16)
    sch, when = build_scheduler(opt, {"name": "onecycle", "pct_start": 0.2}, epochs=3, steps_per_epoch=5,
                                max_lr=1e-3)
    assert when == PER_ITERATION and sch.total_steps == 15
    ref_opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    ref = torch.optim.lr_scheduler.OneCycleLR(ref_opt, max_lr=1e-3, epochs=3, steps_per_epoch=5, pct_start=0.2)
    lrs, ref_lrs = [], []
    for _ in range(15):
        opt.step(), sch.step(), ref_opt.step(), ref.step()
        lrs.append(opt.param_groups[0]["lr"])
        ref_lrs.append(ref_opt.param_groups[0]["lr"])
    assert lrs == ref_lrs
    assert max(lrs) == pytest.approx(1e-3, rel=1e-6) and lrs.index(max(lrs)) == 1  # peak at step 0.2*15 - 1 = 2
    opt2 = build_optimizer(m, {"name": "sgd", "lr": 0.1}, 256)
    sch2, when2 = build_scheduler(opt2, {"name": "multistep", "milestones": [2, 3], "gamma": 0.1}, 4, 7, 0.1)
    assert when2 == PER_EPOCH
    got = []
    for _ in range(4):
        opt2.step()
        sch2.step()
        got.append(opt2.param_groups[0]["lr"])
    assert got == pytest.approx([0.1, 0.01, 0.001, 0.001])
    assert build_scheduler(opt2, {"name": "none"}, 1, 1, 0.1) == (None, None)


def test_ema_update_math():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    ema = ModelEma(model, decay=0.9)
    assert not ema.module.training
    before = {k: v.clone() for k, v in ema.module.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    model.train()
    model(torch.randn(4, 3))  # changes BN running stats and num_batches_tracked
    ema.update(model)
    cur = model.state_dict()
    for k, v in ema.module.state_dict().items():
        if v.is_floating_point():
            torch.testing.assert_close(v, 0.9 * before[k] + 0.1 * cur[k], rtol=0, atol=1e-6)
        else:
            assert torch.equal(v, cur[k])  # integer buffers are copied
    assert int(ema.module.state_dict()["1.num_batches_tracked"]) == 1
    for _ in range(50):
        ema.update(model)
    torch.testing.assert_close(ema.module[0].weight, model[0].weight, rtol=0, atol=0.01)
    ema.set(model)
    assert torch.equal(ema.module[0].weight, model[0].weight)
    assert all(not p.requires_grad for p in ema.module.parameters())


def test_ema_update_equals_the_per_tensor_rule_byte_for_byte():
    """The cached, one-call update gives exactly ``e.mul_(d).add_(m, alpha=1 - d)`` per tensor,
    and still follows the model after ``load_state_dict`` and a new source model."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 36, 5))
    ema = ModelEma(model, decay=0.97)
    ref = {k: v.clone() for k, v in ema.module.state_dict().items()}
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for step in range(4):
        if step == 2:   # weights replaced in place: the cached views must see them
            model.load_state_dict({k: v + 0.5 if v.is_floating_point() else v
                                   for k, v in model.state_dict().items()})
        model.train()
        opt.zero_grad()
        model(torch.randn(2, 3, 8, 8)).sum().backward()
        opt.step()
        ema.update(model)
        for k, m in model.state_dict().items():
            if ref[k].is_floating_point():
                ref[k].mul_(0.97).add_(m, alpha=1.0 - 0.97)
            else:
                ref[k].copy_(m)
        for k, v in ema.module.state_dict().items():
            assert torch.equal(v, ref[k]), (step, k)
    other = copy.deepcopy(model)
    with torch.no_grad():
        for p in other.parameters():
            p.mul_(2.0)
    ema.update(other)   # a different source model: its own tensors, not the cached ones
    w = ref["3.weight"].mul_(0.97).add_(other.state_dict()["3.weight"], alpha=1.0 - 0.97)
    assert torch.equal(ema.module.state_dict()["3.weight"], w)


def test_fused_kernels_where_torch_has_them_and_the_same_update():
    """The engine asks for fused optimiser kernels on CPU and CUDA (parameters on that device);
    a fused optimiser follows the same update rule as the default kernels."""
    import torch
    from torch import nn

    from benchmark.train.optim import build_optimizer, fused_for

    model = nn.Linear(4, 3)
    assert fused_for(model, torch.device("cpu")) is True
    assert fused_for(model, "meta") is False                 # no fused kernels there
    assert fused_for(nn.Linear(4, 3).requires_grad_(False), torch.device("cpu")) is False
    assert fused_for(nn.Linear(4, 3).requires_grad_(False), torch.device("cuda")) is False  # nothing trains
    assert fused_for(model, torch.device("cuda")) is False   # parameters still on the CPU
    for name in ("adam", "adamw", "sgd"):
        cfg = {"name": name, "lr": 0.1, "weight_decay": 0.01}
        torch.manual_seed(0)
        a, b = nn.Linear(4, 3), nn.Linear(4, 3)
        b.load_state_dict(a.state_dict())
        oa, ob = build_optimizer(a, cfg, 16), build_optimizer(b, cfg, 16, fused=True)
        assert ob.defaults["fused"] is True and not oa.defaults.get("fused")
        x = torch.randn(8, 4)
        for _ in range(3):
            for m, o in ((a, oa), (b, ob)):
                o.zero_grad()
                m(x).square().mean().backward()
                o.step()
        assert torch.allclose(a.weight, b.weight, atol=1e-6) and torch.allclose(a.bias, b.bias, atol=1e-6)


def test_cudnn_autotuning_only_when_determinism_is_not_asked():
    import torch

    from benchmark.seed import seed_everything

    before = (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic)
    try:
        seed_everything(0, deterministic=False)
        assert torch.backends.cudnn.benchmark is True and torch.backends.cudnn.deterministic is False
        seed_everything(0, deterministic=True)
        assert torch.backends.cudnn.benchmark is False and torch.backends.cudnn.deterministic is True
    finally:
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = before


def test_runtime_threads_set_for_the_run_and_restored(tmp_path):
    """``threads`` (runtime): torch's intra-op threads while the run trains, restored after;
    a bad value is refused before the run folder exists."""
    import torch

    from benchmark.errors import SewerbenchError
    from benchmark.train.runtime import intra_op_threads

    before = torch.get_num_threads()
    with intra_op_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with intra_op_threads(None):
        assert torch.get_num_threads() == before
    for bad in (0, -2, 1.5, True, "2"):
        with pytest.raises(SewerbenchError, match="must be an integer >= 1 or null"):
            with intra_op_threads(bad, "threads"):
                pass
    assert torch.get_num_threads() == before
