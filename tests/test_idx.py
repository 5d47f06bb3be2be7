"""The IDX reader and writer: round trips of every type, and every way a file can be bad."""

import gzip
import os
import struct

import numpy as np
import pytest

from cyconv.idx import DTYPES, IdxError, atomic_write, read_idx, write_idx

NATIVE = [dt.newbyteorder("=") for dt in DTYPES.values()]


def _sample(dtype, shape):
    n = int(np.prod(shape))
    values = np.arange(n) * 37 - n // 2
    if dtype.kind == "f":
        values = values / 7.0
    return values.astype(dtype).reshape(shape)


def _raw(path, payload):
    path.write_bytes(payload)
    return path


def _header(code, shape):
    return bytes((0, 0, code, len(shape))) + struct.pack(f">{len(shape)}I", *shape)


@pytest.mark.parametrize("dtype", NATIVE, ids=[dt.name for dt in NATIVE])
@pytest.mark.parametrize("shape", [(5,), (3, 4), (2, 3, 4), (2, 1, 3, 2), (0, 28, 28), ()])
@pytest.mark.parametrize("suffix", [".idx", ".idx.gz"])
def test_round_trip(tmp_path, dtype, shape, suffix):
    a = _sample(dtype, shape)
    path = tmp_path / f"a{suffix}"
    write_idx(path, a)
    b = read_idx(path)
    assert b.dtype == dtype and b.shape == a.shape
    np.testing.assert_array_equal(a, b)
    b.flat[:1] = 0  # the reader hands out writable arrays


def test_layout_is_the_mnist_one(tmp_path):
    a = np.array([[1, 2, 3], [4, 5, 6]], dtype=np.int16)
    write_idx(tmp_path / "a.idx", a)
    assert (tmp_path / "a.idx").read_bytes() == (
        b"\0\0\x0b\x02" + b"\0\0\0\x02\0\0\0\x03" + b"\0\x01\0\x02\0\x03\0\x04\0\x05\0\x06")


def test_byte_order_and_non_contiguous_input(tmp_path):
    a = np.arange(24, dtype=">f8").reshape(4, 6)[:, ::2]
    write_idx(tmp_path / "a.idx", a)
    b = read_idx(tmp_path / "a.idx")
    assert b.dtype == np.float64 and b.dtype.isnative
    np.testing.assert_array_equal(a, b)


def test_gz_names_the_inner_file_and_is_reproducible(tmp_path):
    a = _sample(np.dtype("u1"), (10, 28, 28))
    write_idx(tmp_path / "x-idx3-ubyte.gz", a)
    first = (tmp_path / "x-idx3-ubyte.gz").read_bytes()
    write_idx(tmp_path / "x-idx3-ubyte.gz", a)
    assert (tmp_path / "x-idx3-ubyte.gz").read_bytes() == first
    assert b"x-idx3-ubyte\0" in first[:40]  # not the temporary file's name
    assert gzip.decompress(first)[:4] == b"\0\0\x08\x03"


def test_write_leaves_no_temporary_files(tmp_path):
    write_idx(tmp_path / "a.idx.gz", np.zeros(3, np.uint8))
    assert os.listdir(tmp_path) == ["a.idx.gz"]


@pytest.mark.parametrize("dtype", ["int64", "uint16", "bool", "complex64", "float16", "object"])
def test_write_refuses_types_idx_cannot_hold(tmp_path, dtype):
    with pytest.raises(IdxError, match=f"a.idx.*{dtype}"):
        write_idx(tmp_path / "a.idx", np.zeros(2, dtype=dtype))
    assert not (tmp_path / "a.idx").exists()


def test_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "a.idx"
    write_idx(path, np.arange(3, dtype=np.uint8))
    with pytest.raises(RuntimeError), atomic_write(path) as f:
        f.write(b"half")
        raise RuntimeError("crash mid-write")
    np.testing.assert_array_equal(read_idx(path), [0, 1, 2])
    assert os.listdir(tmp_path) == ["a.idx"]


# --- bad files: every rejection is an IdxError (a ValueError) naming the file -------------

GOOD = _header(0x08, (2, 3)) + bytes(range(6))

BAD = {
    "empty": (b"", "empty file"),
    "short magic": (b"\0\0", "truncated IDX header"),
    "bad magic": (b"\x12\x34\x08\x01" + b"\0\0\0\x01" + b"\0", "bad magic number"),
    "gzip without .gz": (gzip.compress(GOOD), "name it .gz"),
    "wrong type code": (b"\0\0\x0a\x01" + b"\0\0\0\x01" + b"\0", "unknown IDX type code 0x0A"),
    "dims cut short": (b"\0\0\x08\x03" + b"\0\0\0\x02\0\0", "3 dimensions need 12 bytes"),
    "truncated data": (GOOD[:-1], "need 6 data bytes, the file has 5"),
    "over-long data": (GOOD + b"\0", "need 6 data bytes, the file has 7"),
    "dims disagree with data": (_header(0x08, (3, 3)) + bytes(6), "3x3 of uint8 need 9"),
    "wide type cut short": (_header(0x0E, (2,)) + bytes(15), "need 16 data bytes"),
    "huge dims": (_header(0x0D, (0xFFFFFFFF, 0xFFFFFFFF)) + bytes(8), "need"),
}


GZ_BAD = {
    "empty": (b"", "empty file"),
    "bad magic": (gzip.compress(b"\x12\x34\x08\x01\0\0\0\x01\0"), "bad magic number"),
    "wrong type code": (gzip.compress(b"\0\0\x07\x01\0\0\0\x01\0"), "unknown IDX type code"),
    "truncated data": (gzip.compress(GOOD[:-2]), r"truncated: .* need 6 data bytes, found 4"),
    "over-long data": (gzip.compress(GOOD + b"\0"), "over-long"),
    "dims disagree with data": (gzip.compress(_header(0x08, (4, 3)) + bytes(6)), "truncated"),
    "huge dims": (gzip.compress(_header(0x0D, (0xFFFFFFFF,) * 3) + bytes(64)), "truncated"),
    "not gzip": (GOOD, "not a valid gzip file"),
    "gzip stream cut short": (gzip.compress(GOOD)[:-10], "not a valid gzip file"),
    "gzip crc wrong": (gzip.compress(GOOD)[:-8] + b"\0" * 8, "not a valid gzip file"),
    "garbage": (b"\x1f\x8b" + b"\xff" * 30, "not a valid gzip file"),
}


CASES = [(".idx", name, *BAD[name]) for name in BAD] + [
    (".gz", name, *GZ_BAD[name]) for name in GZ_BAD]


@pytest.mark.parametrize("suffix, case, payload, why", CASES,
                         ids=[f"{suffix}-{name}" for suffix, name, *_ in CASES])
def test_bad_file_is_named(tmp_path, suffix, case, payload, why):
    path = _raw(tmp_path / f"bad-file{suffix}", payload)
    with pytest.raises(IdxError, match=why) as info:
        read_idx(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, ValueError)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.idx"):
        read_idx(tmp_path / "nothing.idx")
