"""Test fixtures shared by the engine tests: the self-check's tiny dataset and params
(:mod:`benchmark.selfcheck`), whose runs train the registered ``tiny_cnn`` in seconds."""
from benchmark.selfcheck import make_tiny_dataset, tiny_params

__all__ = ["make_tiny_dataset", "tiny_params"]
