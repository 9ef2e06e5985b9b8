"""Atomic file output and the guards that keep commands from losing data.

Atomic output: write to a temporary file beside the target, then rename. No stage ever leaves
a half-written output: if anything fails the temporary file is removed and the target is left
untouched; a process killed mid-write leaves the old target and a stale temporary file, which
:func:`remove_stale_temps` clears (the temporary names carry the writer's process id).

Guards (used by every command that writes):

* :func:`check_not_inside_inputs` refuses an output that is, or lies inside, one of the inputs;
* :func:`check_output_file` refuses an output file path that is a folder (or under a file);
* :func:`check_replaceable_dir` refuses to replace a folder that this program did not create
  (proved by an ownership marker, :data:`OWNER_FILE`, or a command-specific recogniser such as
  the synthetic dataset's ``meta.json``) unless ``force``;
* :func:`claim_dir` writes the ownership marker, :func:`read_owner` reads it.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from benchmark.errors import SewerbenchError

#: The ownership marker a command writes into a folder it created (see :func:`claim_dir`).
OWNER_FILE = ".sewerbench-owner.json"
OWNER_FORMAT = 1

_TMP_RE = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.tmp-")


def _tmp_prefix(path: Path) -> str:
    return f".{path.name}.{os.getpid()}.tmp-"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; rename it onto ``path`` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=_tmp_prefix(path), suffix=suffix or path.suffix or ".tmp",
                               dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale_temps(path: str | os.PathLike) -> list[Path]:
    """Remove temporary files of ``path`` left by writers that no longer run (killed mid-write).

    Only names of the form ``.<name>.<pid>.tmp-*`` (what :func:`atomic_path` creates) whose
    process is gone are removed; returns the removed paths.
    """
    path = Path(path)
    removed: list[Path] = []
    if not path.parent.is_dir():
        return removed
    for p in path.parent.glob(f".{glob_escape(path.name)}.*.tmp-*"):
        m = _TMP_RE.match(p.name)
        if not m or m.group("name") != path.name or _pid_alive(int(m.group("pid"))):
            continue
        with contextlib.suppress(OSError):
            if p.is_dir() and not p.is_symlink():
                import shutil
                shutil.rmtree(p)
            else:
                p.unlink()
            removed.append(p)
    return removed


def glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int = 2) -> None:
    atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=False) + "\n")


def atomic_to_csv(df, path: str | os.PathLike, **kwargs) -> None:
    """Write a pandas DataFrame to CSV atomically (``index=False`` by default)."""
    kwargs.setdefault("index", False)
    with atomic_path(path) as tmp:
        df.to_csv(tmp, **kwargs)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    """Hex SHA-256 of a file's bytes (streamed)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            block = fh.read(chunk)
            if not block:
                return h.hexdigest()
            h.update(block)


# ----------------------------------------------------------------------------- guards
def _real(p: str | os.PathLike) -> Path:
    """Absolute path with symlinks resolved as far as the path exists."""
    return Path(os.path.realpath(os.path.abspath(os.fspath(p))))


def is_same_or_inside(path: str | os.PathLike, other: str | os.PathLike) -> bool:
    """True when ``path`` is ``other`` or lies below it (symlinks and ``..`` resolved; an
    existing pair of paths to the same file, e.g. hard links, counts as the same)."""
    a, b = _real(path), _real(other)
    if a == b or b in a.parents:
        return True
    with contextlib.suppress(OSError):
        if os.path.exists(path) and os.path.exists(other) and os.path.samefile(path, other):
            return True
    return False


def check_not_inside_inputs(out: str | os.PathLike, inputs: Iterable[tuple[str, Any]],
                            out_name: str = "--out") -> None:
    """Refuse an output that is, or lies inside, one of the ``(argument name, path)`` inputs.

    Inputs given as ``None`` are skipped. The message names both arguments and paths.
    """
    for name, value in inputs:
        if value is None or value == "":
            continue
        if is_same_or_inside(out, value):
            rel = "is" if _real(out) == _real(value) or _same_existing(out, value) else "lies inside"
            raise SewerbenchError(f"{out}: {out_name} {rel} the input {name} {value}; writing there "
                                  f"would overwrite the input (choose another {out_name})")


def _same_existing(a, b) -> bool:
    with contextlib.suppress(OSError):
        return os.path.exists(a) and os.path.exists(b) and os.path.samefile(a, b)
    return False


def check_output_file(out: str | os.PathLike, out_name: str = "--out") -> Path:
    """An output *file* path: not a folder, and no existing file where a parent folder must be."""
    out = Path(out)
    if out.is_dir():
        raise SewerbenchError(f"{out}: {out_name} is a folder, expected a file path")
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise SewerbenchError(f"{out}: {out_name}: {parent} is a file, not a folder")
            break
    return out


def check_input_file(path: str | os.PathLike | None, name: str) -> Path:
    """An existing regular file (one-line error naming the argument otherwise)."""
    if path is None:
        raise SewerbenchError(f"{name}: missing")
    p = Path(path)
    if not p.exists():
        raise SewerbenchError(f"{p}: {name}: no such file")
    if p.is_dir():
        raise SewerbenchError(f"{p}: {name}: is a folder, expected a file")
    if not os.access(p, os.R_OK):
        raise SewerbenchError(f"{p}: {name}: not readable")
    return p


def check_input_dir(path: str | os.PathLike | None, name: str) -> Path:
    """An existing folder (one-line error naming the argument otherwise)."""
    if path is None:
        raise SewerbenchError(f"{name}: missing")
    p = Path(path)
    if not p.exists():
        raise SewerbenchError(f"{p}: {name}: no such folder")
    if not p.is_dir():
        raise SewerbenchError(f"{p}: {name}: is a file, expected a folder")
    return p


def read_owner(path: str | os.PathLike) -> dict | None:
    """The ownership marker of folder ``path`` (``{"command": ..., ...}``) or None."""
    f = Path(path) / OWNER_FILE
    if not f.is_file():
        return None
    try:
        data = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("owner") != "sewerbench" or "command" not in data:
        return None
    return data


def claim_dir(path: str | os.PathLike, command: str, **info: Any) -> Path:
    """Create folder ``path`` (if needed) and write its ownership marker for ``command``.

    Call it once the command's inputs are validated, right before the first output is written.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path / OWNER_FILE, {"owner": "sewerbench", "format": OWNER_FORMAT,
                                          "command": command, **info})
    return path


def check_replaceable_dir(path: str | os.PathLike, command: str, *, force: bool = False,
                          recognise: Callable[[Path], bool] | None = None,
                          out_name: str = "--out") -> Path:
    """Refuse to write into / replace folder ``path`` unless it is safe.

    Safe: ``path`` does not exist, is an empty folder, carries this command's ownership
    marker, or ``recognise(path)`` says it is this command's output (e.g. the synthetic
    dataset's meta.json); otherwise only with ``force``. A path that is a file is always
    refused (a folder cannot replace it without losing it).
    """
    path = Path(path)
    if path.is_symlink() and not path.exists():
        raise SewerbenchError(f"{path}: {out_name} is a dangling symbolic link")
    if not path.exists():
        for parent in path.parents:
            if parent.exists():
                if not parent.is_dir():
                    raise SewerbenchError(f"{path}: {out_name}: {parent} is a file, not a folder")
                break
        return path
    if not path.is_dir():
        raise SewerbenchError(f"{path}: {out_name} is an existing file, expected a folder; "
                              "refusing to replace it")
    owner = read_owner(path)
    if owner is not None and owner.get("command") == command:
        return path
    if recognise is not None and recognise(path):
        return path
    try:
        empty = not any(path.iterdir())
    except OSError as exc:
        raise SewerbenchError(f"{path}: {out_name}: cannot list the folder ({exc.strerror})") from None
    if empty or force:
        return path
    who = f"by `sewerbench {owner['command']}`" if owner else "by another program or by hand"
    raise SewerbenchError(f"{path}: {out_name} is a folder that `sewerbench {command}` did not create "
                          f"(made {who}); refusing to replace its contents (pass --force to "
                          "replace it anyway, or choose another folder)")


def check_disjoint_from_inputs(out: str | os.PathLike, inputs: Iterable[tuple[str, Any]],
                               out_name: str = "--out") -> None:
    """For an output folder that is *replaced* as a whole: refuse it when it is or lies inside
    an input, when an input lies inside it (replacing it would delete that input) and when it
    holds the current working directory."""
    if is_same_or_inside(os.getcwd(), out):
        raise SewerbenchError(f"{out}: {out_name} holds the current working folder; refusing to "
                              "replace it")
    check_not_inside_inputs(out, inputs, out_name)
    for name, value in inputs:
        if value is None or value == "":
            continue
        if is_same_or_inside(value, out):
            raise SewerbenchError(f"{out}: {out_name} holds the input {name} {value}; replacing the "
                                  f"folder would delete that input (choose another {out_name})")


def _old_prefix(path: Path) -> str:
    return f".{path.name}."


def replace_dir(tmp: str | os.PathLike, out: str | os.PathLike) -> None:
    """Move the finished folder ``tmp`` onto ``out``: the older ``out`` is first renamed aside to
    ``.<name>.<pid>.old-*`` and removed only once the new one is in place. A process killed
    between the two renames leaves the older folder aside; :func:`recover_dir` puts it back."""
    import shutil
    import uuid

    tmp, out = Path(tmp), Path(out)
    old = None
    if out.exists() or out.is_symlink():
        old = out.parent / f"{_old_prefix(out)}{os.getpid()}.old-{uuid.uuid4().hex[:8]}"
        os.replace(out, old)
    try:
        os.replace(tmp, out)
    except BaseException:
        if old is not None:
            os.replace(old, out)
        raise
    if old is not None:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)


def recover_dir(out: str | os.PathLike) -> str | None:
    """Repair what a killed :func:`replace_dir` (or a killed build) left beside ``out``.

    When ``out`` is missing and an older version was set aside by a writer that no longer runs,
    it is moved back (returns ``"restored"``); set-aside copies of a finished replacement and
    stale temporary folders are removed (returns ``"cleaned"``); else None.
    """
    import shutil

    out = Path(out)
    if not out.parent.is_dir():
        return None
    olds = []
    for p in out.parent.glob(f"{glob_escape(_old_prefix(out))}*.old-*"):
        m = re.match(rf"^{re.escape(_old_prefix(out))}(\d+)\.old-", p.name)
        if m and not _pid_alive(int(m.group(1))):
            olds.append(p)
    result = None
    if olds and not (out.exists() or out.is_symlink()):
        newest = max(olds, key=lambda p: p.stat().st_mtime)
        os.replace(newest, out)
        olds.remove(newest)
        result = "restored"
    for p in olds:
        shutil.rmtree(p, ignore_errors=True)
        result = result or "cleaned"
    if remove_stale_temps(out):
        result = result or "cleaned"
    return result


def check_numeric_columns(path: str | os.PathLike, columns: Iterable[str] | None = None,
                          *, any_of: Iterable[Iterable[str]] = ()) -> None:
    """Refuse a CSV whose score ``columns`` hold anything but numbers (one line naming the
    file, line and column). ``any_of``: alternative column sets, the first fully present one
    is checked (e.g. ``Defect`` or the 17 classes). Other problems (missing columns, ranges)
    are left to the reader."""
    import pandas as pd

    path = Path(path)
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise SewerbenchError(f"{path}: empty file (no header)") from None
    except pd.errors.ParserError as exc:
        raise SewerbenchError(f"{path}: malformed CSV: {' '.join(str(exc).split())}") from None
    except UnicodeDecodeError as exc:
        raise SewerbenchError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise SewerbenchError(f"{path}: cannot read: {exc.strerror or exc}") from None
    df.columns = [str(c).strip() for c in df.columns]
    cols = list(columns or [])
    for alt in any_of:
        alt = list(alt)
        if all(c in df.columns for c in alt):
            cols += alt
            break
    if len(df) == 0:
        raise SewerbenchError(f"{path}: no data rows")
    for col in cols:
        if col not in df.columns:
            continue
        raw = df[col].str.strip()
        num = pd.to_numeric(raw, errors="coerce")
        bad = num.isna() & ~raw.str.lower().isin(["nan"])
        if bad.any():
            i = int(bad.to_numpy().argmax())
            shown = df[col].iloc[i]
            what = "empty value" if shown.strip() == "" else f"value {shown!r}"
            raise SewerbenchError(f"{path}: line {i + 2}: column {col}: {what} is not a number "
                                  f"({int(bad.sum())} such rows)")
