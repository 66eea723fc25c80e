"""What dynamic convolution learnt about a machine, kept on disk between processes: the cost model's calibrated
constants and benchmark mode's measured choices (as FFTW keeps its wisdom and Triton its autotuning cache).

One JSON file per kind and machine key (library and torch versions, device name, dtype, threads), in
``$DYNATTN_CACHE_DIR`` or else the user's cache directory (``$XDG_CACHE_HOME/dynattn`` or ``~/.cache/dynattn``;
``%LOCALAPPDATA%\\dynattn`` on Windows, ``~/Library/Caches/dynattn`` on macOS). A file is written whole to a
temporary name and renamed over the old one, so a reader never sees half a file and two processes writing at once
leave one complete file. A file that is unreadable, corrupt, of another format or of another key is ignored (and
rewritten by the next store): nothing here raises; a directory that cannot be written leaves the cache in memory.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from .._version import __version__

__all__ = ["FORMAT", "cache_dir", "device_name", "machine_key", "load", "store", "remove", "remove_all"]

#: The files' format, and the meaning of what they hold: a file of another format is ignored (2: the cost model
#: knows output mixing's columns form, so a profile calibrated before it would misjudge training steps).
FORMAT = 2


def cache_dir() -> Path:
    """Where the files go: ``$DYNATTN_CACHE_DIR``, else the platform's user cache directory + ``dynattn``."""
    override = os.environ.get("DYNATTN_CACHE_DIR")
    if override:
        return Path(override)
    if sys.platform == "win32":
        return Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local")) / "dynattn"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "dynattn"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dynattn"


@functools.cache
def device_name(device: str) -> str:
    """The processor's or GPU's model name for a device string (``"cpu"``, ``"cuda:0"``)."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev.index or 0)
    if dev.type != "cpu":
        return dev.type
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def machine_key(device: str, dtype: torch.dtype, threads: int) -> dict[str, Any]:
    """What a cached value holds for: the library and torch versions, the device's name, the dtype and threads."""
    return {"dynattn": __version__, "torch": torch.__version__, "device": device_name(device),
            "dtype": str(dtype).removeprefix("torch."), "threads": threads}


def _path(kind: str, key: dict[str, Any]) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return cache_dir() / f"{kind}-{digest}.json"


def load(kind: str, key: dict[str, Any]) -> Any:
    """The value stored for ``kind`` and ``key``; None where there is none or the file is not one of ours."""
    try:
        data = json.loads(_path(kind, key).read_text())
    except (OSError, ValueError, RecursionError):  # unreadable, not JSON, or nested past the parser's depth
        return None
    if not isinstance(data, dict) or data.get("format") != FORMAT or data.get("key") != key:
        return None
    return data.get("value")


def store(kind: str, key: dict[str, Any], value: Any) -> bool:
    """Write ``value`` for ``kind`` and ``key`` atomically; False where the directory cannot be written."""
    path = _path(kind, key)
    try:
        text = json.dumps({"format": FORMAT, "key": key, "value": value}, indent=1, sort_keys=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            os.fchmod(fd, 0o666 & ~_umask())  # readable as a plainly created file would be (mkstemp: 0600)
            with os.fdopen(fd, "w") as f:
                f.write(text)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except (OSError, TypeError, ValueError):  # an unwritable directory, or a value JSON cannot hold
        return False
    return True


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def remove(kind: str, key: dict[str, Any]) -> None:
    """Forget what is stored for ``kind`` and ``key``."""
    _unlink(_path(kind, key))


def remove_all(kind: str) -> None:
    """Forget what is stored for ``kind``, whatever the key (every machine's, every version's)."""
    for path in cache_dir().glob(f"{kind}-*.json"):
        _unlink(path)


def _unlink(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass
