"""Every published number the suite compares against, as data (REFERENCE.md section 7).

Values are percentages as printed in the papers (F1 = F1-Normal, F2 = F2-CIW). ``None``
means the paper gives no number. Each row names the run of ``params.yaml`` (and the
evaluation split) that re-runs it, or says why it is not re-run.
"""
from __future__ import annotations

from dataclasses import dataclass

from benchmark.classes import CLASS_CODES, NORMAL

MAQ2L_PAPER = "Zuo et al. 2025, MA-Q2L (J. Comput. Civ. Eng. 39(1) 04024050), Table 3"
SEWERML_PAPER = "Haurum & Moeslund 2021, Sewer-ML (CVPR), Tables 4 and 5"

NO_PUBLIC_CODE = "not re-run: no public code"


@dataclass(frozen=True)
class Table3Row:
    """One row of the MA-Q2L paper's Table 3."""

    key: str                 # stable id used in results/table3.csv
    fraction: str            # "1/16" or "1"
    model: str               # as printed in the paper
    starred: bool            # "*": evaluated on the 1/16 sub-dataset val set
    val_f1: float | None
    val_f2: float | None
    test_f1: float | None
    test_f2: float | None
    run: str | None = None   # our run (params.yaml runs: or combos:) that re-runs it
    reason: str | None = None  # why not re-run (run is None)

    @property
    def val_split(self) -> str:
        """Which of our evaluation files holds the comparable val number."""
        return "val_sub" if self.starred else "val"


TABLE3: tuple[Table3Row, ...] = (
    Table3Row("q2l_sub_star", "1/16", "Baseline* (Q2L)", True, 89.41, 63.40, None, None,
              run="q2l_sub"),
    Table3Row("q2l_sub", "1/16", "Baseline (Q2L)", False, 89.86, 60.89, None, None,
              run="q2l_sub"),
    Table3Row("maq2l_sub_star", "1/16", "Ours* (MA-Q2L)", True, 89.56, 67.03, None, None,
              run="maq2l_sub"),
    Table3Row("maq2l_sub", "1/16", "Ours (MA-Q2L)", False, 89.72, 62.38, None, None,
              run="maq2l_sub"),
    Table3Row("sewerml_benchmark", "1", "Sewer-ML benchmark", False, 91.32, 55.36, 90.94, 55.11,
              run="benchmark_full"),
    Table3Row("cafen", "1", "CAFEN (Tao et al. 2022)", False, 91.70, 57.76, None, None,
              reason=NO_PUBLIC_CODE),
    Table3Row("ct_gat", "1", "CT-GAT (Haurum et al. 2022b)", False, 91.94, 61.70, 91.61, 60.57,
              reason="not re-run: multi-task model trained with pipe shape/material annotations "
                     "that are not part of the public Sewer-ML release"),
    Table3Row("mshvit", "1", "MSHViT (Haurum et al. 2022a)", False, 92.44, 61.68, 92.11, 60.11,
              reason="not re-run: outside this suite's method set (code public at "
                     "JoakimHaurum/MSHViT, not re-implemented here)"),
    Table3Row("spm", "1", "SPM (Hu et al. 2023)", False, 91.57, 63.38, None, None,
              reason=NO_PUBLIC_CODE),
    Table3Row("q2l_full", "1", "Baseline (Q2L)", False, 92.22, 71.25, None, None,
              run="q2l_full"),
    Table3Row("maq2l_full", "1", "Ours (MA-Q2L)", False, 92.58, 73.15, 92.10, 71.98,
              run="maq2l_full"),
)


@dataclass(frozen=True)
class SewerMLRow:
    """One row of the Sewer-ML paper's Table 4 (end to end) or Table 5 (two-stage)."""

    model: str
    val_f2: float
    val_f1: float
    test_f2: float
    test_f1: float
    run: str | None = None
    reason: str | None = None


TABLE4: tuple[SewerMLRow, ...] = (
    SewerMLRow("Xie2019", 48.57, 91.08, 48.34, 90.62, run="xie2019_full"),
    SewerMLRow("Chen2018", 42.03, 3.96, 41.74, 3.59, run="chen2018_full"),
    SewerMLRow("Hassan2019", 13.14, 0.00, 12.94, 0.00, run="hassan2019_full"),
    SewerMLRow("Myrans2018", 4.01, 26.03, 4.11, 27.48, run="myrans2018_full"),
    SewerMLRow("ResNet-101", 53.26, 79.55, 53.21, 78.57, run="resnet101_full"),
    SewerMLRow("KSSNet", 54.42, 80.60, 54.55, 79.29, run="kssnet_full"),
    SewerMLRow("TResNet-M", 53.83, 81.23, 53.79, 79.91, run="tresnet_m_full"),
    SewerMLRow("TResNet-L", 54.63, 81.22, 54.75, 79.88, run="tresnet_l_full"),
    SewerMLRow("TResNet-XL", 54.42, 81.81, 54.24, 80.42, run="tresnet_xl_full"),
)

#: Table 5: Xie2019 binary stage 1 + the named stage-2 model ("replace" combination).
TABLE5: tuple[SewerMLRow, ...] = (
    SewerMLRow("Chen2018", 48.67, 91.06, 48.19, 90.60, run="twostage_chen2018_full"),
    SewerMLRow("Hassan2019", 18.08, 91.08, 17.89, 90.62, run="twostage_hassan2019_full"),
    SewerMLRow("Myrans2018", 27.87, 91.08, 27.83, 90.62, run="twostage_myrans2018_full"),
    SewerMLRow("ResNet-101", 54.45, 91.28, 54.01, 90.88, run="twostage_resnet101_full"),
    SewerMLRow("KSSNet", 55.37, 91.30, 55.09, 90.95, run="twostage_kssnet_full"),
    SewerMLRow("TResNet-M", 54.58, 91.33, 54.32, 90.93, run="twostage_tresnet_m_full"),
    SewerMLRow("TResNet-L (Benchmark)", 55.36, 91.32, 55.11, 90.94, run="benchmark_full"),
    SewerMLRow("TResNet-XL", 54.97, 91.37, 54.51, 90.95, run="twostage_tresnet_xl_full"),
)

#: The Benchmark's classic metrics on val (Sewer-ML paper), keyed like metrics.json "Main".
BENCHMARK_CLASSIC_VAL: dict[str, float] = {
    "mF1": 61.45, "MF1": 42.39, "OP": 47.02, "OR": 88.67, "CF1": 46.38,
    "EMAcc": 51.65, "mAP": 79.79,
}

#: The Benchmark's per-class test F2 (17 classes in official order, then Normal).
BENCHMARK_TEST_F2_CLASS: dict[str, float] = dict(zip(
    (*CLASS_CODES, NORMAL),
    (43.35, 83.82, 52.94, 39.69, 86.76, 24.70, 34.96, 53.41, 59.45, 61.05, 11.94, 66.05,
     64.00, 47.39, 36.79, 65.41, 82.72, 90.35),
))

#: Released MA-Q2L checkpoints (val F1-Normal, val F2-CIW), REFERENCE.md section 3.
RELEASED_CHECKPOINTS: dict[str, tuple[float, float]] = {
    "MA-Q2L-0.0625": (89.56, 67.03),
    "MA-Q2L-1": (92.58, 73.15),
}

#: Later work mentioned for context (val / test F2-CIW); never re-run.
LATER_WORK: dict[str, dict[str, float]] = {
    "CT-GNN (WACV 2022)": {"val_f2": 61.92},
    "any-class presence loss, MaxViT-S (2025)": {"val_f2": 69.04, "test_f2": 67.41},
}


def table3_runs() -> set[str]:
    """Runs Table 3 needs."""
    return {r.run for r in TABLE3 if r.run}
