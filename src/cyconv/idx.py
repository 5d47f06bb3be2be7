"""IDX files, the format of MNIST and Fashion-MNIST: read_idx and write_idx.

An IDX file is a 4-byte magic number ``00 00 <type code> <ndim>``, then ``ndim`` big-endian
uint32 dimensions, then the elements in C order, big-endian.  Files whose name ends in ``.gz``
are gzip-compressed.  Every malformed file is rejected with an :class:`IdxError` (a
``ValueError``) whose message names the file and says what is wrong; nothing is ever unpickled.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import struct
import zlib

import numpy as np

__all__ = ["IdxError", "read_idx", "write_idx", "atomic_write", "DTYPES"]

# type code -> element type, as the format defines them (all multi-byte types big-endian)
DTYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODES = {dt.newbyteorder("="): code for code, dt in DTYPES.items()}

# Decompress in pieces, so that a header claiming terabytes costs only the bytes really there.
_CHUNK = 16 << 20


class IdxError(ValueError):
    """A file that is not a well-formed IDX file."""


def _is_gz(path):
    return os.fspath(path).endswith(".gz")


def _read_exact(f, n):
    """Up to ``n`` bytes: fewer only when the stream ends first."""
    parts, got = [], 0
    while got < n:
        part = f.read(min(n - got, _CHUNK))
        if not part:
            break
        parts.append(part)
        got += len(part)
    return b"".join(parts)


def read_idx(path):
    """Read the IDX file ``path`` (gzip-compressed if its name ends in ``.gz``).

    Returns a writable NumPy array in native byte order with the file's shape and type.
    Raises IdxError naming the file when the magic number, type code, dimensions or data length
    is wrong, or when a ``.gz`` file is not valid gzip; FileNotFoundError when it does not exist.
    """
    name = os.fspath(path)
    try:
        with open(name, "rb") as raw:
            if _is_gz(name):
                with gzip.GzipFile(fileobj=raw, mode="rb") as f:
                    return _parse(f, name, size=None)
            return _parse(raw, name, size=os.fstat(raw.fileno()).st_size)
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        # BadGzipFile: not gzip or CRC mismatch; EOFError: the gzip stream is cut short.
        reason = str(exc) or type(exc).__name__
        raise IdxError(f"{name}: not a valid gzip file ({reason})") from None


def _parse(f, name, size):
    header = _read_exact(f, 4)
    if not header:
        raise IdxError(f"{name}: empty file, expected an IDX header")
    if len(header) < 4:
        raise IdxError(f"{name}: truncated IDX header ({len(header)} of 4 magic bytes)")
    if header[:2] != b"\0\0":
        hint = " (it looks gzip-compressed: name it .gz)" if header[:2] == b"\x1f\x8b" else ""
        raise IdxError(f"{name}: bad magic number 0x{header.hex()}, an IDX file starts with "
                       f"00 00{hint}")
    code, ndim = header[2], header[3]
    if code not in DTYPES:
        known = ", ".join(f"0x{c:02X}" for c in DTYPES)
        raise IdxError(f"{name}: unknown IDX type code 0x{code:02X} (known: {known})")
    dims_raw = _read_exact(f, 4 * ndim)
    if len(dims_raw) < 4 * ndim:
        raise IdxError(f"{name}: truncated IDX header: {ndim} dimensions need {4 * ndim} "
                       f"bytes, found {len(dims_raw)}")
    shape = struct.unpack(f">{ndim}I", dims_raw)
    dtype = DTYPES[code]
    offset = 4 + 4 * ndim
    expected = int(np.prod(shape, dtype=object)) * dtype.itemsize
    dims_text = "x".join(map(str, shape)) or "scalar"
    what = f"dimensions {dims_text} of {dtype.newbyteorder('=').name}"
    if size is not None and size - offset != expected:
        # A plain file's length is known up front; refuse before reading anything.
        raise IdxError(f"{name}: {what} need {expected} data bytes, the file has "
                       f"{size - offset}")
    buf = bytearray()
    while len(buf) < expected:
        part = f.read(min(expected - len(buf), _CHUNK))
        if not part:
            raise IdxError(f"{name}: truncated: {what} need {expected} data bytes, "
                           f"found {len(buf)}")
        buf += part
    if f.read(1):
        raise IdxError(f"{name}: over-long: data goes on past the {expected} bytes that "
                       f"{what} need")
    # A bytearray keeps the array writable without a copy.
    arr = np.frombuffer(buf, dtype=dtype).reshape(shape)
    if dtype.itemsize > 1:
        arr = arr.astype(dtype.newbyteorder("="))
    return arr


@contextlib.contextmanager
def atomic_write(path):
    """Open a temporary file beside ``path`` for binary writing; on success it replaces ``path``.

    Readers never see a half-written file and a failure never destroys the old one: the data
    goes to a hidden temporary in the same folder (the same file system, so that os.replace is
    atomic), is flushed to disk, and is renamed over ``path`` only when the block ends without
    an exception.  Otherwise the temporary is deleted.
    """
    path = os.fspath(path)
    folder, base = os.path.split(os.path.abspath(path))
    for attempt in range(100):
        tmp = os.path.join(folder, f".{base}.{os.getpid()}.{attempt}.tmp")
        try:
            # os.open with 0o666 lets the umask decide permissions, as for a plain open().
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            break
        except FileExistsError:
            continue
    else:
        raise FileExistsError(f"{path}: could not create a temporary file beside it")
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_idx(path, array):
    """Write ``array`` to ``path`` as an IDX file, gzip-compressed if the name ends in ``.gz``.

    The dtype must be one IDX can hold (uint8, int8, int16, int32, float32, float64); nothing
    is cast silently.  The file is written atomically (see :func:`atomic_write`).
    """
    arr = np.asarray(array)
    code = _CODES.get(arr.dtype.newbyteorder("="))
    name = os.fspath(path)
    if code is None:
        raise IdxError(f"{name}: IDX cannot hold dtype {arr.dtype}; use one of "
                       f"{', '.join(dt.newbyteorder('=').name for dt in DTYPES.values())}")
    if arr.ndim > 255:
        raise IdxError(f"{name}: IDX holds at most 255 dimensions, got {arr.ndim}")
    if any(d > 0xFFFFFFFF for d in arr.shape):
        raise IdxError(f"{name}: IDX dimensions must be below 2**32, got {arr.shape}")
    header = bytes((0, 0, code, arr.ndim)) + struct.pack(f">{arr.ndim}I", *arr.shape)
    # Flat bytes: memoryview.cast refuses shapes with a zero in them.
    payload = np.ascontiguousarray(arr, dtype=DTYPES[code]).reshape(-1).view(np.uint8)
    with atomic_write(name) as raw:
        if _is_gz(name):
            # The header names the uncompressed file (not the temporary), and mtime=0 makes the
            # output depend on the data alone.
            inner = os.path.basename(name)[:-3]
            out = gzip.GzipFile(filename=inner, mode="wb", fileobj=raw, mtime=0)
        else:
            out = contextlib.nullcontext(raw)
        with out as f:
            f.write(header)
            f.write(payload)
