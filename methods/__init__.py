"""Models and losses of the benchmark. ``methods.build(name, **cfg)`` builds any registered method."""
from methods.registry import REGISTRY, MethodSpec, available, build, get_spec

__all__ = ["REGISTRY", "MethodSpec", "available", "build", "get_spec"]
