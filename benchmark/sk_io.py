"""Save and load the scikit-learn models of a run (Myrans et al. 2018) without pickle.

Files are written with `skops <https://skops.readthedocs.io>`_ (``model.skops``): a zip of a
JSON schema plus numpy arrays, read back by constructing only the types it names. Loading
checks every type the file names against skops' own safe defaults plus :data:`TRUSTED_TYPES`
and refuses the file, naming it and the first untrusted types, before anything is built: a
crafted file cannot run code. Writes are atomic (temporary file + rename); the zip's CRC-32
of every member detects truncation and corruption.

Usage (what the training engine and ``predict --run`` call)::

    save_sklearn_model(model, run_dir / MODEL_FILE)
    model = load_sklearn_model(run_dir / MODEL_FILE)
"""
from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Any

from benchmark.errors import SewerbenchError
from benchmark.io import atomic_path, remove_stale_temps

#: File name of a run's scikit-learn model.
MODEL_FILE = "model.skops"

#: Types beyond skops' defaults (numpy, scikit-learn estimators, builtins) that a model file of
#: ours may name. Extend it only with classes whose construction from data runs no code.
TRUSTED_TYPES: tuple[str, ...] = (
    "methods.myrans2018.MyransClassifier",
    "sklearn.tree._tree.Tree",
)

_SHOW = 3


def _skops():
    try:
        import skops.io as sio
    except ImportError:  # pragma: no cover - a declared dependency
        raise SewerbenchError("skops is not installed (pip install skops): it reads and writes "
                              "scikit-learn models without pickle") from None
    return sio


def _untrusted(sio, file: str | os.PathLike, path: Path) -> list[str]:
    try:
        found = sio.get_untrusted_types(file=file)
    except (zipfile.BadZipFile, KeyError, ValueError, OSError, EOFError, TypeError) as exc:
        raise SewerbenchError(f"{path}: not a readable skops model file (truncated, corrupt or "
                              f"not skops: {' '.join(str(exc).split())[:160]})") from None
    return [t for t in found if t not in TRUSTED_TYPES]


def save_sklearn_model(model: Any, path: str | os.PathLike) -> Path:
    """Write ``model`` to ``path`` (skops format) atomically; returns ``path``.

    Refuses (and writes nothing) when the model holds a type that :func:`load_sklearn_model`
    would not trust, so every file written here can be read back.
    """
    sio = _skops()
    path = Path(path)
    if path.is_dir():
        raise SewerbenchError(f"{path}: is a folder, expected a model file path")
    remove_stale_temps(path)
    with atomic_path(path, suffix=".skops") as tmp:
        try:
            sio.dump(model, tmp)
        except Exception as exc:  # noqa: BLE001 - skops raises many types for unsupported objects
            raise SewerbenchError(f"{path}: cannot save the model with skops "
                                  f"({type(exc).__name__}: {' '.join(str(exc).split())[:160]})") from None
        bad = _untrusted(sio, tmp, path)
        if bad:
            raise SewerbenchError(f"{path}: the model holds types that are not trusted for loading "
                                  f"({', '.join(bad[:_SHOW])}); add them to "
                                  "benchmark.sk_io.TRUSTED_TYPES if they are data-only")
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
    return path


def load_sklearn_model(path: str | os.PathLike) -> Any:
    """Read a model written by :func:`save_sklearn_model` without running code from the file.

    One-line :class:`SewerbenchError` naming the file when it is missing, not a skops file
    (e.g. a pickle), truncated or corrupt, or names a type outside the trusted list.
    """
    sio = _skops()
    path = Path(path)
    if not path.is_file():
        legacy = path.with_name("model.pkl")
        hint = (f"; {legacy} is a pickle from an older sewerbench and is not loaded (it could run "
                "code): retrain the run" if legacy.is_file() else "")
        raise SewerbenchError(f"{path}: model file not found{hint}")
    if path.stat().st_size == 0:
        raise SewerbenchError(f"{path}: empty model file (truncated write?)")
    if not zipfile.is_zipfile(path):
        raise SewerbenchError(f"{path}: not a skops model file (a pickle or other format is never "
                              "loaded: it could run code)")
    bad = _untrusted(sio, path, path)
    if bad:
        more = f" and {len(bad) - _SHOW} more" if len(bad) > _SHOW else ""
        raise SewerbenchError(f"{path}: refused: the file names untrusted types "
                              f"({', '.join(bad[:_SHOW])}{more}); loading it could run code")
    try:
        model = sio.load(path, trusted=list(TRUSTED_TYPES))
    except Exception as exc:  # noqa: BLE001 - corrupt members surface as many exception types
        raise SewerbenchError(f"{path}: truncated or corrupt model file "
                              f"({type(exc).__name__}: {' '.join(str(exc).split())[:160]})") from None
    if not hasattr(model, "predict_proba"):
        raise SewerbenchError(f"{path}: holds a {type(model).__name__}, not a classifier with predict_proba")
    return model
