"""sewerbench: a reproducible benchmark and ablation suite for multi-label sewer defect recognition."""
__version__ = "0.1.0"
