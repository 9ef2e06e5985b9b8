"""Training engine: one loop for every method (see :mod:`benchmark.train.engine`)."""
from benchmark.train.engine import train_run
from benchmark.train.inference import predict_run

__all__ = ["train_run", "predict_run"]
