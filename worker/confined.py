"""File operations that stay inside their folder: no symlink below it is ever followed.

Every path the service touches after intake (the inbox, the archive, the quarantine)
is opened one component at a time from the folder's own descriptor with `O_NOFOLLOW`,
so a folder replaced by a symlink after intake makes the operation fail instead of
reading, moving or writing a file elsewhere. Files are published without ever
replacing an existing name (a hard link fails if the name is taken), and a source is
removed only when a byte-identical copy is durable at its destination.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import secrets
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import BinaryIO

# Every file and folder the service files away holds patient data: owner and group only.
FILE_MODE = 0o640
FOLDER_MODE = 0o750
NAME_MAX = 255  # bytes per name on Linux file systems (ext4, xfs, NFS, SMB mounts)
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_FOLDER_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_CHUNK = 1024 * 1024


class LeavesFolder(OSError):  # noqa: N818 (names the situation, like FileNotFoundError)
    """The path is not inside its folder, or reaches it through a symlink or a non-folder."""


class NotRegularFile(OSError):  # noqa: N818 (names the situation, like FileNotFoundError)
    """The path names a symlink, folder, fifo or device, not a regular file."""


class ContentMismatch(OSError):  # noqa: N818 (names the situation, like FileNotFoundError)
    """The bytes at a path are not the bytes the caller holds (changed, swapped)."""


@dataclass(frozen=True, slots=True)
class FileIdentity:
    """Which file a path named when it was read: a rewrite or swap changes one of these.

    `ctime_ns` changes on every write and cannot be set by a writer (unlike mtime).
    """

    device: int
    inode: int
    size: int
    mtime_ns: int
    ctime_ns: int

    @classmethod
    def of(cls, info: os.stat_result) -> FileIdentity:
        """The identity in a stat result."""
        return cls(info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)

    def same_content_as(self, info: os.stat_result) -> bool:
        """Whether `info` is this file, not written since (ctime moves on link: ignored)."""
        return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns) == (
            self.device,
            self.inode,
            self.size,
            self.mtime_ns,
        )


@dataclass(frozen=True, slots=True)
class HeldFile:
    """The bytes read from a file, their SHA-256, and the file they came from."""

    path: Path
    data: bytes
    sha256: str
    identity: FileIdentity


def relative_parts(root: Path, path: Path) -> tuple[str, ...]:
    """The components of `path` below `root`, compared as written (no symlink resolved).

    Raises:
        LeavesFolder: `path` is not below `root`, or climbs out with `..`.
    """
    try:
        parts = PurePath(path).relative_to(root).parts
    except ValueError:
        raise LeavesFolder(errno.EXDEV, f"not inside {root}", str(path)) from None
    if not parts or any(part in ("..", ".") for part in parts):
        raise LeavesFolder(errno.EXDEV, f"does not name a file inside {root}", str(path))
    return parts


def inside(root: Path, path: Path) -> bool:
    """Whether `path` is written as a path below `root`."""
    try:
        relative_parts(root, path)
    except LeavesFolder:
        return False
    return True


@contextmanager
def open_folder(root: Path, parts: tuple[str, ...], *, create: bool = False) -> Iterator[int]:
    """A descriptor of the folder `root/parts...`, reached without following a symlink.

    `root` itself is opened as configured (a site may mount or link it); everything
    below it must be a real folder. With `create`, missing folders are made (0750).

    Raises:
        LeavesFolder: a component is a symlink or not a folder.
        FileNotFoundError: a component is missing (and `create` is false).
    """
    if create:
        root.mkdir(mode=FOLDER_MODE, parents=True, exist_ok=True)
    descriptor = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in parts:
            child = _open_child(descriptor, part, create=create, root=root)
            os.close(descriptor)
            descriptor = child
        yield descriptor
    finally:
        os.close(descriptor)


def _open_child(parent: int, name: str, *, create: bool, root: Path) -> int:
    """Open the folder `name` inside the folder `parent`, refusing symlinks."""
    while True:
        try:
            return os.open(name, _FOLDER_FLAGS, dir_fd=parent)
        except FileNotFoundError:
            if not create:
                raise
            # Made meanwhile by another worker: open it all the same.
            with contextlib.suppress(FileExistsError):
                os.mkdir(name, FOLDER_MODE, dir_fd=parent)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise LeavesFolder(
                    errno.ELOOP, f"{name!r} below {root} is a symlink or not a folder"
                ) from None
            raise


@contextmanager
def open_file(root: Path, path: Path) -> Iterator[tuple[int, os.stat_result]]:
    """A read descriptor of the regular file `path` inside `root`, and its stat.

    Raises:
        LeavesFolder, NotRegularFile, FileNotFoundError, OSError.
    """
    parts = relative_parts(root, path)
    with open_folder(root, parts[:-1]) as folder:
        try:
            descriptor = os.open(parts[-1], _READ_FLAGS, dir_fd=folder)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise NotRegularFile(errno.ELOOP, "is a symlink", str(path)) from None
            raise
    try:
        info = os.fstat(descriptor)
        if not stat.S_ISREG(info.st_mode):
            raise NotRegularFile(errno.EINVAL, "is not a regular file", str(path))
        yield descriptor, info
    finally:
        os.close(descriptor)


def read_held(root: Path, path: Path, *, max_bytes: int) -> HeldFile | FileIdentity:
    """Read the whole file once and hash what was read.

    Returns:
        The held bytes, or (nothing read) the identity of a file over `max_bytes`.

    Raises:
        LeavesFolder, NotRegularFile, FileNotFoundError, ContentMismatch (the file
        changed while it was read), OSError.
    """
    with open_file(root, path) as (descriptor, before):
        if before.st_size > max_bytes:
            return FileIdentity.of(before)
        chunks = []
        remaining = before.st_size + 1  # one byte more than stat said: growth shows
        while remaining > 0:
            chunk = os.read(descriptor, min(remaining, _CHUNK))
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
        after = os.fstat(descriptor)
    data = b"".join(chunks)
    identity = FileIdentity.of(before)
    if len(data) != before.st_size or not identity.same_content_as(after):
        raise ContentMismatch(errno.EAGAIN, "changed while it was read", str(path))
    return HeldFile(path, data, hashlib.sha256(data).hexdigest(), identity)


def hash_file(root: Path, path: Path) -> tuple[str, FileIdentity]:
    """SHA-256 of a file inside `root`, streamed, with the identity it was read under.

    Raises:
        ContentMismatch: the file changed while it was hashed.
    """
    with open_file(root, path) as (descriptor, before):
        digest = _digest(descriptor)
        after = os.fstat(descriptor)
    identity = FileIdentity.of(before)
    if not identity.same_content_as(after):
        raise ContentMismatch(errno.EAGAIN, "changed while it was hashed", str(path))
    return digest, identity


def _digest(descriptor: int) -> str:
    digest = hashlib.sha256()
    while chunk := os.read(descriptor, _CHUNK):
        digest.update(chunk)
    return digest.hexdigest()


def fit_name(name: str, limit: int = NAME_MAX) -> str:
    """`name` shortened to at most `limit` UTF-8 bytes, keeping its extension.

    The stem is cut at a character boundary and marked with `~`, so a legal 255-byte
    name still fits once a prefix or suffix is added to it.
    """
    if len(name.encode("utf-8", "surrogateescape")) <= limit:
        return name
    stem, dot, suffix = name.rpartition(".")
    if not dot or not stem or len(suffix) > 16:
        stem, suffix = name, ""
    tail = f"~.{suffix}" if suffix else "~"
    budget = limit - len(tail.encode("utf-8", "surrogateescape"))
    cut = stem.encode("utf-8", "surrogateescape")[: max(budget, 1)]
    return cut.decode("utf-8", "ignore") + tail


@dataclass(frozen=True, slots=True)
class Placement:
    """Where a file is to go: a folder root and a path below it."""

    root: Path
    path: Path


def file_away(
    source: Placement,
    target: Placement,
    *,
    sha256: str,
    identity: FileIdentity,
    data: bytes | None = None,
) -> Path:
    """Move the file `source` (read earlier as `identity`, content `sha256`) to `target`.

    Never replaces an existing name and never loses a byte:

    1. If `target` exists with the same content, it is the kept copy (a retry after a
       crash); with other content, the file goes beside it (`<name>~2`, ...).
    2. On one file system the file is hard-linked into place; across file systems (or
       when the source changed since it was read and `data` holds the read bytes) the
       bytes are written to a temporary name, fsynced, and linked into place. The
       target folder is fsynced either way.
    3. The source is unlinked only while it is still the file that was read (same
       inode, size and mtime); a source rewritten since is left where it is (new
       content: the watcher takes it as a new scan).

    Returns:
        Where the file is now kept.

    Raises:
        ContentMismatch: the source no longer holds `sha256` and `data` is None.
        LeavesFolder, NotRegularFile, OSError.
    """
    src_parts = relative_parts(source.root, source.path)
    dst_parts = relative_parts(target.root, target.path)
    if source.root / PurePath(*src_parts) == target.root / PurePath(*dst_parts):
        return target.path  # already where it belongs (a retry)
    with (
        open_folder(source.root, src_parts[:-1]) as src_folder,
        open_folder(target.root, dst_parts[:-1], create=True) as dst_folder,
    ):
        name = _publish(
            src_folder, src_parts[-1], dst_folder, dst_parts[-1], sha256, identity, data, source
        )
        _protect(dst_folder, name)
        os.fsync(dst_folder)
        _unlink_if_unchanged(src_folder, src_parts[-1], identity)
        os.fsync(src_folder)
    return target.path.with_name(name)


def _publish(
    src_folder: int,
    src_name: str,
    dst_folder: int,
    dst_name: str,
    sha256: str,
    identity: FileIdentity,
    data: bytes | None,
    source: Placement,
) -> str:
    """Put the content at a free (or byte-identical) name in `dst_folder`; return it."""
    for name in _candidate_names(dst_name):
        existing = _existing_digest(dst_folder, name)
        if existing == sha256:
            return name  # the kept copy already
        if existing is not None:
            continue  # other bytes under that name: never replaced, go beside
        current = _lstat(src_folder, src_name)
        # Strict (ctime too): only the very file that was read, untouched, is linked.
        if current is not None and FileIdentity.of(current) == identity:
            try:
                os.link(
                    src_name,
                    name,
                    src_dir_fd=src_folder,
                    dst_dir_fd=dst_folder,
                    follow_symlinks=False,
                )
            except FileExistsError:
                continue  # taken meanwhile: look at it again
            except OSError as exc:
                if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                    raise
            else:
                return name
        if data is not None:
            written = _write_new(dst_folder, name, data)
        else:
            written = _copy_new(src_folder, src_name, dst_folder, name, sha256, identity, source)
        if written:
            return name
    raise FileExistsError(errno.EEXIST, "no free name", dst_name)  # pragma: no cover


def _candidate_names(name: str) -> Iterator[str]:
    yield name
    stem, dot, suffix = name.rpartition(".")
    if not dot:
        stem, suffix = name, ""
    for number in range(2, 1000):
        yield fit_name(f"{stem}~{number}{dot}{suffix}")


def _lstat(folder: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=folder, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _existing_digest(folder: int, name: str) -> str | None:
    """SHA-256 of the regular file `name` in `folder`; None when there is none.

    Anything else under the name (a symlink, a folder) counts as "other content".
    """
    try:
        descriptor = os.open(name, _READ_FLAGS, dir_fd=folder)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "symlink"
        raise
    try:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            return "not a file"
        return _digest(descriptor)
    finally:
        os.close(descriptor)


def _write_new(folder: int, name: str, data: bytes) -> bool:
    """Write `data` durably under `name` unless the name is taken; True when written."""
    return _publish_temporary(folder, name, lambda handle: handle.write(data))


def _copy_new(
    src_folder: int,
    src_name: str,
    dst_folder: int,
    name: str,
    sha256: str,
    identity: FileIdentity,
    source: Placement,
) -> bool:
    """Copy the source (streamed, any size) under `name`, provided it still hashes to
    `sha256`; True when written, False when the name was taken meanwhile.

    Raises:
        ContentMismatch: the source changed since it was read.
    """
    descriptor = os.open(src_name, _READ_FLAGS, dir_fd=src_folder)
    try:
        if not identity.same_content_as(os.fstat(descriptor)):
            raise ContentMismatch(errno.EAGAIN, "changed since it was read", str(source.path))

        def copy(handle: BinaryIO) -> None:
            digest = hashlib.sha256()
            while chunk := os.read(descriptor, _CHUNK):
                digest.update(chunk)
                handle.write(chunk)
            if digest.hexdigest() != sha256:
                raise ContentMismatch(errno.EAGAIN, "changed since it was read", str(source.path))

        return _publish_temporary(dst_folder, name, copy)
    finally:
        os.close(descriptor)


def _publish_temporary(folder: int, name: str, fill: Callable[[BinaryIO], object]) -> bool:
    """Fill a hidden temporary file, fsync it, and link it to `name` if that is free."""
    temporary = f".cxr-{secrets.token_hex(8)}.partial"
    descriptor = os.open(
        temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE, dir_fd=folder
    )
    try:
        try:
            with os.fdopen(descriptor, "wb", closefd=False) as handle:
                fill(handle)
                handle.flush()
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        os.link(temporary, name, src_dir_fd=folder, dst_dir_fd=folder, follow_symlinks=False)
    except FileExistsError:
        return False
    finally:
        os.unlink(temporary, dir_fd=folder)
    return True


def _protect(folder: int, name: str) -> None:
    """Make a filed file readable by owner and group only (it holds patient data)."""
    descriptor = os.open(name, _READ_FLAGS, dir_fd=folder)
    try:
        os.fchmod(descriptor, FILE_MODE)
    finally:
        os.close(descriptor)


def _unlink_if_unchanged(folder: int, name: str, identity: FileIdentity) -> None:
    current = _lstat(folder, name)
    if current is not None and identity.same_content_as(current):
        os.unlink(name, dir_fd=folder)


def write_text(root: Path, path: Path, text: str) -> Path:
    """Write a small text file of our own (a reason file) inside `root`, atomically.

    The file is the service's own metadata beside a filed scan, so a retry replaces it.
    """
    return write_bytes(root, path, text.encode("utf-8"))


def write_bytes(root: Path, path: Path, data: bytes) -> Path:
    """Write a file of our own (a reason, a heatmap) inside `root`, atomically.

    Through no symlink, readable by owner and group only; a retry replaces it.
    """
    parts = relative_parts(root, path)
    with open_folder(root, parts[:-1], create=True) as folder:
        temporary = f".cxr-{secrets.token_hex(8)}.partial"
        descriptor = os.open(
            temporary,
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
            FILE_MODE,
            dir_fd=folder,
        )
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(descriptor, view) :]
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        os.rename(temporary, parts[-1], src_dir_fd=folder, dst_dir_fd=folder)
        os.fsync(folder)
    return path
