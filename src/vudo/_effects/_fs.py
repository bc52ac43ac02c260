"""FS_READ and FS_WRITE: files under the granted root, never outside it.

Confinement has three layers: the path text (relative, no ``..``), the resolved path (symlinks
followed must stay inside the root), and the opened file itself (``O_NOFOLLOW``, a regular file,
and a single hard link). The last rule exists because a hard link inside the root may name a
file outside it and no path check can tell: the host cannot enumerate a file's other names, so
a regular file with ``st_nlink > 1`` is refused for reading and for writing. The link count is
checked on the path before the effect is accepted (NOT_PERMITTED from ``vudo_emit_effect``) and
again on the opened file descriptor, which is what decides (a NOT_PERMITTED result).
"""

from __future__ import annotations

import errno
import os
import re
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePath

from .._config.permissions import Permissions
from ..abi import ResultCode
from ._outcome import Failed, Invalid, Refused
from ._queue import Job
from ._wire import U32, encode_result, split_prefixed

__all__ = ["fs_read", "fs_write"]

_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_SPLIT_SEPARATORS = re.compile(r"[\\/]")


def resolve(perms: Permissions, raw: bytes) -> Path:
    """The absolute, symlink-free path of ``raw`` inside the FS root, or raise."""
    if perms.fs_root is None:
        raise Refused("no FS root granted")
    try:
        rel = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise Invalid("path is not UTF-8") from None
    if not rel:
        raise Invalid("empty path")
    pure = PurePath(rel)
    if pure.is_absolute() or pure.drive or pure.root or rel[0] in "/\\":
        raise Refused(f"absolute path {rel!r}")
    # Both separators, so "..\\" is refused on every OS.
    if ".." in _SPLIT_SEPARATORS.split(rel):
        raise Refused(f"'..' in path {rel!r}")
    if "\x00" in rel:
        raise Invalid("NUL byte in path")
    try:
        root = perms.fs_root.resolve(strict=True)
        target = (root / rel).resolve()
    except FileNotFoundError:
        raise Failed(ResultCode.ERROR, f"FS root {perms.fs_root} does not exist") from None
    except (OSError, RuntimeError) as exc:  # symlink loops
        raise Failed(ResultCode.ERROR, f"cannot resolve {rel!r}: {exc}") from None
    if not target.is_relative_to(root):
        raise Refused(f"path {rel!r} resolves outside the FS root")
    if target == root:
        raise Invalid("path names the FS root itself")
    try:
        links = os.lstat(target).st_nlink
    except OSError:  # missing (FS_WRITE creates it) or unreadable: the job reports it
        links = 1
    if links > 1 and target.is_file():
        raise Refused(f"{rel!r} has {links} hard links; another may lie outside the FS root")
    return target


def _check_opened(fd: int, target: Path) -> None:
    """Refuse what the path checks cannot see: non-regular files and hard-linked files."""
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise Failed(ResultCode.ERROR, f"{target.name!r} is not a regular file")
    if st.st_nlink > 1:
        raise Failed(
            ResultCode.NOT_PERMITTED,
            f"{target.name!r} has {st.st_nlink} hard links; another may lie outside the FS root",
        )


def fs_read(perms: Permissions, payload: bytes, message_cap: int | None) -> Job:
    """Check an FS_READ payload and return the job reading the file, refusing one larger than
    ``fs_max_read`` or than a result of ``message_cap`` bytes can carry."""
    target = resolve(perms, payload)
    cap, what = perms.fs_max_read, "fs_max_read"
    if message_cap is not None and message_cap - 4 < cap:
        cap, what = max(message_cap - 4, 0), "max_message_size"

    def job() -> bytes:
        with _fs_errors(target):
            # O_NONBLOCK: opening a FIFO must not hang a worker; fstat rejects it below.
            fd = os.open(target, os.O_RDONLY | _O_NOFOLLOW | _O_CLOEXEC | _O_NONBLOCK)
            with os.fdopen(fd, "rb") as f:
                _check_opened(fd, target)
                data = f.read(cap + 1)
        if len(data) > cap:
            raise Failed(ResultCode.BUFFER_TOO_SMALL, f"file is larger than {what} ({cap} bytes)")
        return encode_result(ResultCode.OK, data)

    return job


def fs_write(perms: Permissions, payload: bytes) -> Job:
    """Check an FS_WRITE payload and return the job writing the file."""
    if not perms.fs_write:
        raise Refused("FS write not granted")
    raw_path, data = split_prefixed(payload, "path")
    target = resolve(perms, raw_path)

    def job() -> bytes:
        with _fs_errors(target):
            target.parent.mkdir(parents=True, exist_ok=True)
            # No O_TRUNC: the checks on the opened file come before anything is changed.
            flags = os.O_WRONLY | os.O_CREAT | _O_NOFOLLOW | _O_CLOEXEC | _O_NONBLOCK
            fd = os.open(target, flags, 0o644)
            with os.fdopen(fd, "wb") as f:
                _check_opened(fd, target)
                f.truncate(0)
                f.write(data)
        return encode_result(ResultCode.OK, U32.pack(len(data)))

    return job


@contextmanager
def _fs_errors(path: Path) -> Iterator[None]:
    """Map OS errors of a file operation to result statuses (only the file name is shown)."""
    try:
        yield
    except FileNotFoundError:
        raise Failed(ResultCode.NOT_FOUND, f"{path.name!r} not found") from None
    except OSError as exc:
        if isinstance(exc, PermissionError) or exc.errno == errno.ELOOP:
            raise Failed(ResultCode.NOT_PERMITTED, f"{path.name!r}: {exc.strerror}") from None
        raise Failed(ResultCode.ERROR, f"{path.name!r}: {exc.strerror or exc}") from None
