"""cyconv.keras.datasets: where the files are looked for, how they are downloaded and checked.

Small IDX files written by the tests stand in for the real ones; downloads come from an HTTP
server on 127.0.0.1.  The real Fashion-MNIST is used where Debian's package is installed.
"""

import dataclasses
import gzip
import hashlib
import http.server
import os
import socket
import struct
import threading

import numpy as np
import pytest

from cyconv.idx import IdxError, read_idx, write_idx
from cyconv.keras import datasets
from cyconv.keras.datasets import FILES, DatasetNotFoundError, fashion_mnist, mnist

DEBIAN = "/usr/share/datasets/fashion-mnist"


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """A private CYCONV_HOME, no proxies, and no built-in mirrors reachable by accident."""
    monkeypatch.setenv("CYCONV_HOME", str(tmp_path / "home"))
    for var in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY",
                "ALL_PROXY", "CYCONV_DATASET_MIRRORS"):
        monkeypatch.delenv(var, raising=False)
    for name, spec in datasets._SPECS.items():
        monkeypatch.setitem(datasets._SPECS, name, dataclasses.replace(
            spec, mirrors=(f"http://127.0.0.1:{_closed_port()}/",)))


def _closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _small_set(seed, n_train=6, n_test=4):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
            rng.integers(0, 10, n_train, dtype=np.uint8),
            rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
            rng.integers(0, 10, n_test, dtype=np.uint8)]


def _write_set(folder, arrays, names=FILES):
    os.makedirs(folder, exist_ok=True)
    for name, a in zip(names, arrays):
        write_idx(os.path.join(folder, name), a)


def _assert_loaded(result, arrays):
    (x_train, y_train), (x_test, y_test) = result
    for got, want in zip((x_train, y_train, x_test, y_test), arrays):
        assert got.dtype == np.uint8
        np.testing.assert_array_equal(got, want)


def _use_system_dir(monkeypatch, folder):
    spec = datasets._SPECS["fashion_mnist"]
    monkeypatch.setitem(datasets._SPECS, "fashion_mnist",
                        dataclasses.replace(spec, system_dirs=(str(folder),)))


# --- lookup order ----------------------------------------------------------------------------

def test_cache_dir_follows_cyconv_home(tmp_path, monkeypatch):
    assert mnist.cache_dir() == str(tmp_path / "home" / "datasets" / "mnist")
    monkeypatch.delenv("CYCONV_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    assert fashion_mnist.cache_dir() == str(tmp_path / "user" / ".cache" / "cyconv" /
                                            "datasets" / "fashion_mnist")


def test_cache_comes_first(tmp_path, monkeypatch):
    cached, system = _small_set(1), _small_set(2)
    _write_set(fashion_mnist.cache_dir(), cached)
    _write_set(tmp_path / "system", system)
    _use_system_dir(monkeypatch, tmp_path / "system")
    _assert_loaded(fashion_mnist.load_data(), cached)


def test_system_dir_when_cache_is_empty(tmp_path, monkeypatch):
    system = _small_set(3)
    _write_set(tmp_path / "system", system)
    _use_system_dir(monkeypatch, tmp_path / "system")
    _assert_loaded(fashion_mnist.load_data(), system)
    assert not os.path.exists(fashion_mnist.cache_dir())  # nothing copied or downloaded


def test_a_folder_counts_only_when_it_has_all_four_files(tmp_path, monkeypatch):
    system = _small_set(4)
    _write_set(fashion_mnist.cache_dir(), _small_set(5)[:3], FILES[:3])
    _write_set(tmp_path / "system", system)
    _use_system_dir(monkeypatch, tmp_path / "system")
    _assert_loaded(fashion_mnist.load_data(), system)


def test_mnist_has_no_system_dir():
    with pytest.raises(DatasetNotFoundError) as info:
        mnist.load_data(verbose=False)
    assert "apt-get" not in str(info.value)


def test_uncompressed_files_are_accepted():
    arrays = _small_set(6)
    _write_set(mnist.cache_dir(), arrays, [f[:-3] for f in FILES])
    _assert_loaded(mnist.load_data(), arrays)


def test_module_form_as_in_keras():
    import cyconv.keras.datasets.fashion_mnist as fm

    assert fm is fashion_mnist and fm.load_data.__name__ == "load_data"
    assert fashion_mnist.CLASS_NAMES == ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
    assert mnist.CLASS_NAMES == tuple("0123456789")
    with pytest.raises(ValueError, match="unknown dataset 'cifar10'"):
        datasets.load_data("cifar10")


# --- local files are checked by structure -----------------------------------------------------

@pytest.mark.parametrize("index, bad, why", [
    (0, np.zeros((6, 28, 27), np.uint8), r"shape \(n, 28, 28\)"),
    (0, np.zeros((6, 28, 28), np.float32), "uint8 images"),
    (1, np.zeros((6, 1), np.uint8), "vector of labels"),
    (3, np.zeros(5, np.uint8), "5 labels for the 4 images"),
    (3, np.full(4, 10, np.uint8), "label 10 is out of range"),
])
def test_malformed_cached_files_are_named(index, bad, why):
    arrays = _small_set(7)
    arrays[index] = bad
    _write_set(mnist.cache_dir(), arrays)
    with pytest.raises(IdxError, match=why) as info:
        mnist.load_data()
    assert FILES[index] in str(info.value)


def test_truncated_cached_file_is_named():
    _write_set(mnist.cache_dir(), _small_set(8))
    path = os.path.join(mnist.cache_dir(), FILES[2])
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])
    with pytest.raises(IdxError, match="not a valid gzip file") as info:
        mnist.load_data()
    assert path in str(info.value)


# --- downloads ----------------------------------------------------------------------------------

class _Server:
    """Serves ``routes`` (URL path -> bytes) on 127.0.0.1 and records the paths asked for."""

    def __init__(self):
        self.routes, self.requests = {}, []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests.append(self.path)
                body = server.routes.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        # A short poll interval keeps shutdown() from costing half a second per test.
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.01,),
                                       daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = _Server()
    yield s
    s.close()


@pytest.fixture
def published(tmp_path, monkeypatch):
    """Small gz files standing for the official ones, with their checksums in MNIST's table."""
    arrays = _small_set(9)
    _write_set(tmp_path / "published", arrays)
    blobs = {f: (tmp_path / "published" / f).read_bytes() for f in FILES}
    checksums = {f: (hashlib.sha256(b).hexdigest(), len(b)) for f, b in blobs.items()}
    spec = datasets._SPECS["mnist"]
    monkeypatch.setitem(datasets._SPECS, "mnist", dataclasses.replace(spec, checksums=checksums))
    return arrays, blobs


def _cache_listing():
    folder = mnist.cache_dir()
    return sorted(os.listdir(folder)) if os.path.isdir(folder) else []


def test_download_verifies_and_caches(server, published, capsys):
    arrays, blobs = published
    for f, b in blobs.items():
        server.routes[f"/a/{f}"] = b
    _assert_loaded(mnist.load_data(mirrors=[server.url + "/a/"]), arrays)
    assert _cache_listing() == sorted(FILES)  # no temporary files left behind
    for f, b in blobs.items():
        with open(os.path.join(mnist.cache_dir(), f), "rb") as fh:
            assert fh.read() == b
    assert "Downloading " + server.url in capsys.readouterr().err
    # The second time the cache answers and the server is not asked again.
    asked = len(server.requests)
    _assert_loaded(mnist.load_data(mirrors=[server.url + "/a/"]), arrays)
    assert len(server.requests) == asked


@pytest.mark.parametrize("corruption", ["flipped byte", "cut short", "too long", "404"])
def test_corrupt_download_is_dropped_and_next_mirror_tried(server, published, corruption):
    arrays, blobs = published
    for f, b in blobs.items():
        bad = {"flipped byte": b[:20] + bytes([b[20] ^ 1]) + b[21:], "cut short": b[:-5],
               "too long": b + b"\0" * 3, "404": None}[corruption]
        if bad is not None:
            server.routes[f"/bad/{f}"] = bad
        server.routes[f"/good/{f}"] = b
    mirrors = [server.url + "/bad", server.url + "/good"]
    _assert_loaded(mnist.load_data(mirrors=mirrors, verbose=False), arrays)
    assert _cache_listing() == sorted(FILES)
    assert server.requests == [f"/{m}/{f}" for f in FILES for m in ("bad", "good")]


def test_all_mirrors_failing_says_where_to_put_the_files(server, published):
    _, blobs = published
    for f, b in blobs.items():
        server.routes[f"/bad/{f}"] = b[::-1]
    mirrors = [server.url + "/bad", server.url + "/missing", f"http://127.0.0.1:{_closed_port()}"]
    with pytest.raises(DatasetNotFoundError) as info:
        mnist.load_data(mirrors=mirrors, verbose=False)
    message = str(info.value)
    assert mnist.cache_dir() in message
    for f in FILES:
        assert f in message
    assert "SHA-256" in message and "404" in message and "refused" in message
    assert "\n" not in message
    assert _cache_listing() == []  # the corrupted download was not kept


def test_fashion_mnist_offline_message_names_the_debian_package(tmp_path, monkeypatch):
    _use_system_dir(monkeypatch, tmp_path / "no-such-dir")
    with pytest.raises(DatasetNotFoundError, match="apt-get install dataset-fashion-mnist") as info:
        fashion_mnist.load_data(verbose=False)
    assert fashion_mnist.cache_dir() in str(info.value)


def test_partial_cache_downloads_only_what_is_missing(server, published):
    arrays, blobs = published
    _write_set(mnist.cache_dir(), arrays[:2], FILES[:2])
    for f, b in blobs.items():
        server.routes[f"/m/{f}"] = b
    _assert_loaded(mnist.load_data(mirrors=server.url + "/m", verbose=False), arrays)
    assert server.requests == [f"/m/{f}" for f in FILES[2:]]


def test_mirrors_from_the_environment(server, published, monkeypatch):
    arrays, blobs = published
    for f, b in blobs.items():
        server.routes[f"/mnist/{f}"] = b
    monkeypatch.setenv("CYCONV_DATASET_MIRRORS",
                       f"http://127.0.0.1:{_closed_port()}/{{name}}, {server.url}/{{name}}/")
    _assert_loaded(mnist.load_data(verbose=False), arrays)
    assert server.requests == [f"/mnist/{f}" for f in FILES]


# --- the real Fashion-MNIST -------------------------------------------------------------------

# SHA-256 of the uncompressed IDX files, which do not depend on how they were gzipped.
FASHION_PAYLOAD_SHA256 = {
    "train-images-idx3-ubyte.gz": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte.gz": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte.gz": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte.gz": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
# The gzip header time of Zalando's files; Debian's packaging (strip-nondeterminism) replaced it
# and dropped the stored file name, leaving the compressed stream itself untouched.
ZALANDO_MTIME = {"train": 1504176606, "t10k": 1504176627}


def _debian_or_skip():
    if not all(os.path.isfile(os.path.join(DEBIAN, f)) for f in FILES):
        pytest.skip(f"Fashion-MNIST is not in {DEBIAN} (apt-get install dataset-fashion-mnist)")


def test_debian_files_are_the_official_ones():
    _debian_or_skip()
    for f in FILES:
        with open(os.path.join(DEBIAN, f), "rb") as fh:
            data = fh.read()
        assert hashlib.sha256(gzip.decompress(data)).hexdigest() == FASHION_PAYLOAD_SHA256[f]
        if data[3] != 0:
            continue  # a differently packaged copy: the payload check above suffices
        # Put back the header Zalando's file had: flag FNAME, their mtime, the inner name.
        official = (data[:3] + b"\x08" + struct.pack("<I", ZALANDO_MTIME[f.split("-")[0]])
                    + data[8:10] + f[:-3].encode() + b"\0" + data[10:])
        sha256, size = datasets._SPECS["fashion_mnist"].checksums[f]
        assert len(official) == size
        assert hashlib.sha256(official).hexdigest() == sha256


def test_real_fashion_mnist_loads(monkeypatch):
    _debian_or_skip()
    _use_system_dir(monkeypatch, DEBIAN)
    (x_train, y_train), (x_test, y_test) = fashion_mnist.load_data()
    assert x_train.shape == (60000, 28, 28) and x_test.shape == (10000, 28, 28)
    assert y_train.shape == (60000,) and y_test.shape == (10000,)
    assert {a.dtype for a in (x_train, y_train, x_test, y_test)} == {np.dtype(np.uint8)}
    assert np.bincount(y_train).tolist() == [6000] * 10
    assert np.bincount(y_test).tolist() == [1000] * 10
    assert x_train.max() == 255 and x_train.min() == 0
    np.testing.assert_array_equal(read_idx(os.path.join(DEBIAN, FILES[3])), y_test)
