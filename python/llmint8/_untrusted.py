"""Files from outside are untrusted: the checks every Python loader makes, with the message
format of the C++ side ("'<file>': <field> must be <expected>, got <actual>"). Regular files
only, sizes bounded before anything is allocated, every index and value checked."""

import os
import stat
from typing import NoReturn, Optional

import torch

_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def fail(file, field: str, expected: str, actual) -> NoReturn:
    raise ValueError(f"'{file}': {field} must be {expected}, got {actual}")


def read_file(path, max_bytes: Optional[int] = None) -> bytes:
    """The bytes of a regular file. A directory, FIFO or device is refused before any read could
    block (the open itself cannot: O_NONBLOCK); failures name the file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except (OSError, ValueError) as error:  # ValueError: a NUL byte in the path
        raise ValueError(f"'{path}': cannot open: {getattr(error, 'strerror', None) or error}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kind = next((name for test, name in _KINDS if test(info.st_mode)), "not a regular file")
            fail(path, "the path", "a regular file", kind)
        if max_bytes is not None and info.st_size > max_bytes:
            fail(path, "its size", f"at most {max_bytes} bytes", info.st_size)
        with open(fd, "rb", closefd=False) as f:
            return f.read()
    finally:
        os.close(fd)


def non_finite(t: torch.Tensor) -> str:
    """'' when every value of t is finite, else 'N non-finite values (first: nan at [i, j])'."""
    if not t.is_floating_point() or t.numel() == 0:
        return ""
    bad = ~torch.isfinite(t.detach())
    count = int(bad.sum())
    if count == 0:
        return ""
    first = bad.nonzero()[0].tolist()
    value = t.detach()[tuple(first)].item()
    return f"{count} non-finite value{'s' if count > 1 else ''} (first: {value} at {first})"


def check_finite(file, tensor: str, t: torch.Tensor) -> None:
    problem = non_finite(t)
    if problem:
        fail(file, f"tensor '{tensor}'", "finite", problem)
