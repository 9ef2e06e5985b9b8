"""``sewerbench pretrain``: the synthetic stand-in for ImageNet pretraining (benchmark.pretrain)."""
from __future__ import annotations

import logging

from benchmark.errors import SewerbenchError

NAME = "pretrain"
HELP = ("train the stand-in for ImageNet pretraining of the smoke profile's pretrained backbones "
        "on a disjoint synthetic set (pretext: scene parameters, never defect labels)")
log = logging.getLogger(__name__)


def add_arguments(p) -> None:
    p.add_argument("--params", default="params.yaml", help="parameters file (pretrain:, synth:, profiles:)")
    p.add_argument("--out", help="output folder (default: the active profile's standin_weights)")
    p.add_argument("--profile", help="override params.yaml's profile")
    p.add_argument("--force", action="store_true",
                   help="replace an --out folder that `sewerbench pretrain` did not create")


def run(args) -> int:
    from benchmark.config.resolve import load_params
    from benchmark.pretrain import PretrainConfig, pretrain, write_unused
    from benchmark.synth import SynthConfig

    params = load_params(args.params)
    profile = args.profile or params.get("profile") or "smoke"
    profiles = params.get("profiles") or {}
    if not isinstance(profiles, dict) or profile not in profiles:
        raise SewerbenchError(f"{args.params}: profiles: no profile {profile!r}")
    section = params.get("pretrain")
    if section is not None and not isinstance(section, dict):
        raise SewerbenchError(f"{args.params}: pretrain: must be a mapping")
    cfg = PretrainConfig.from_dict(section)
    standin = (profiles[profile] or {}).get("standin_weights")
    out = args.out or standin
    if not out:
        raise SewerbenchError(f"--out: missing (profile {profile!r} has no standin_weights)")
    if not standin:
        write_unused(out, profile, force=args.force)
        print(f"pretrain: profile {profile} loads no stand-in weights; wrote {out}/meta.json only")
        return 0
    synth = SynthConfig.from_dict(params.get("synth"))
    progress = (profiles[profile] or {}).get("progress")
    meta = pretrain(cfg, out, width=synth.width, height=synth.height, difficulty=synth.difficulty,
                    label_source=synth.label_source, progress=progress, force=args.force)
    for name, rep in meta["backbones"].items():
        h = rep["holdout"]
        print(f"pretrain: {name} -> {out}/{name}.pt (held-out pretext R^2 {h['r2_mean']:.3f}, "
              f"texture accuracy {h['texture_accuracy']:.3f}; for {', '.join(rep['methods'])})")
    return 0
