"""MNIST and Fashion-MNIST, loaded as Keras loads them: ``mnist.load_data()``.

Each ``load_data()`` returns ``((x_train, y_train), (x_test, y_test))``: uint8 images of shape
(n, 28, 28) and uint8 labels.  The four standard IDX files are looked for, in this order, in

1. ``$CYCONV_HOME/datasets/<name>/`` (``CYCONV_HOME`` defaults to ``~/.cache/cyconv``);
2. for Fashion-MNIST, Debian's ``/usr/share/datasets/fashion-mnist/``
   (``apt-get install dataset-fashion-mnist``);

and otherwise downloaded from public mirrors into the first folder.  A download is accepted only
if its SHA-256 matches the official file's; it is written to a temporary file and renamed into
place, so the cache never holds a partial or corrupted file.  ``CYCONV_DATASET_MIRRORS`` (base
URLs separated by spaces or commas; ``{name}`` stands for the dataset's name) replaces the
built-in mirror list.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import sys
import types
import urllib.error
import urllib.request
from dataclasses import dataclass

import numpy as np

from ..idx import IdxError, atomic_write, read_idx

__all__ = ["mnist", "fashion_mnist", "load_data", "cache_dir", "DatasetNotFoundError",
           "ChecksumError", "FILES"]

# In the order load_data returns them: x_train, y_train, x_test, y_test.
FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
         "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


class DatasetNotFoundError(FileNotFoundError):
    """The dataset is neither on this machine nor downloadable."""


class ChecksumError(ValueError):
    """A downloaded file is not the official one."""


@dataclass(frozen=True)
class _Spec:
    name: str
    title: str
    class_names: tuple
    # file name -> (SHA-256, size in bytes) of the official .gz file
    checksums: dict
    mirrors: tuple
    system_dirs: tuple = ()
    install_hint: str = ""


_SPECS = {
    "mnist": _Spec(
        name="mnist",
        title="MNIST",
        class_names=tuple(str(d) for d in range(10)),
        # The files the mirrors below serve (and yann.lecun.com served), as torchvision and
        # many others pin them.
        checksums={
            "train-images-idx3-ubyte.gz":
                ("440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609", 9912422),
            "train-labels-idx1-ubyte.gz":
                ("3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c", 28881),
            "t10k-images-idx3-ubyte.gz":
                ("8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6", 1648877),
            "t10k-labels-idx1-ubyte.gz":
                ("f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6", 4542),
        },
        mirrors=("https://storage.googleapis.com/cvdf-datasets/mnist/",
                 "https://ossci-datasets.s3.amazonaws.com/mnist/"),
    ),
    "fashion_mnist": _Spec(
        name="fashion_mnist",
        title="Fashion-MNIST",
        class_names=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                     "Sneaker", "Bag", "Ankle boot"),
        # Zalando's files (their sizes and MD5s are those in the Fashion-MNIST README).  Debian
        # ships the same compressed streams with the gzip header's name and time stripped, so
        # its copies have other checksums; that is why local files are checked by structure.
        checksums={
            "train-images-idx3-ubyte.gz":
                ("3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84", 26421880),
            "train-labels-idx1-ubyte.gz":
                ("a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845", 29515),
            "t10k-images-idx3-ubyte.gz":
                ("346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073", 4422102),
            "t10k-labels-idx1-ubyte.gz":
                ("67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5", 5148),
        },
        # HTTPS first; Zalando's own bucket speaks only plain HTTP.  Both serve the same bytes.
        mirrors=("https://storage.googleapis.com/tensorflow/tf-keras-datasets/",
                 "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"),
        system_dirs=("/usr/share/datasets/fashion-mnist",),
        install_hint="apt-get install dataset-fashion-mnist",
    ),
}

_TIMEOUT = 30.0


def _spec(name):
    try:
        return _SPECS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; choose from {', '.join(_SPECS)}") from None


def cyconv_home():
    """``$CYCONV_HOME``, or ``~/.cache/cyconv`` when it is unset."""
    return os.path.expanduser(os.environ.get("CYCONV_HOME") or os.path.join("~", ".cache",
                                                                            "cyconv"))


def cache_dir(name):
    """The folder where dataset ``name`` is looked for first and downloaded to."""
    return os.path.join(cyconv_home(), "datasets", _spec(name).name)


def _mirrors(spec, mirrors):
    if mirrors is None:
        env = os.environ.get("CYCONV_DATASET_MIRRORS", "").replace(",", " ").split()
        mirrors = env or spec.mirrors
    elif isinstance(mirrors, str):
        mirrors = [mirrors]
    return [m.replace("{name}", spec.name) for m in mirrors]


def _existing(folder, fname):
    """``folder/fname``, or its uncompressed twin, whichever exists; else None."""
    for candidate in (fname, fname[: -len(".gz")]):
        path = os.path.join(folder, candidate)
        if os.path.isfile(path):
            return path
    return None


def _locate(spec, cache):
    """The four files from the first folder that holds all of them, or None."""
    for folder in (cache, *spec.system_dirs):
        paths = [_existing(folder, f) for f in FILES]
        if all(paths):
            return paths
    return None


def _fetch(url, dest, sha256, size):
    """Download ``url`` to ``dest`` if its bytes are the expected ones; else keep nothing."""
    with urllib.request.urlopen(url, timeout=_TIMEOUT) as response, atomic_write(dest) as f:
        digest = hashlib.sha256()
        got = 0
        while chunk := response.read(1 << 20):
            got += len(chunk)
            if got > size:  # stop early rather than fill the disk
                raise ChecksumError(f"longer than the official {size} bytes")
            digest.update(chunk)
            f.write(chunk)
        if got != size:
            raise ChecksumError(f"{got} bytes, the official file has {size}")
        if digest.hexdigest() != sha256:
            raise ChecksumError(f"SHA-256 {digest.hexdigest()} is not the official {sha256}")


def _download(spec, fname, cache, mirrors, verbose):
    """Try each mirror in turn; return None on success, else the list of failures."""
    sha256, size = spec.checksums[fname]
    dest = os.path.join(cache, fname)
    failures = []
    for base in mirrors:
        url = base.rstrip("/") + "/" + fname
        if verbose:
            print(f"Downloading {url} ({size / 1e6:.1f} MB)", file=sys.stderr, flush=True)
        try:
            _fetch(url, dest, sha256, size)
            return None
        except (OSError, http.client.HTTPException, ValueError) as exc:
            # ValueError covers ChecksumError and URLs urllib cannot parse.
            if isinstance(exc, urllib.error.URLError) and not isinstance(
                    exc, urllib.error.HTTPError):
                exc = exc.reason  # "[Errno 111] Connection refused", not "<urlopen error ...>"
            failures.append(f"{url}: {exc}")
            if verbose:
                print(f"  failed: {exc}", file=sys.stderr, flush=True)
    return failures


def _not_found(spec, cache, failures):
    where = f"put {', '.join(FILES[:-1])} and {FILES[-1]} in {cache}{os.sep}"
    if spec.install_hint:
        where += f" (or run `{spec.install_hint}`)"
    tried = "; ".join(failures) if failures else "no mirrors configured"
    return DatasetNotFoundError(f"{spec.title} is not on this machine and could not be "
                                f"downloaded: {where}. Download failures: {tried}")


def _check(spec, images, labels, images_path, labels_path):
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
        raise IdxError(f"{images_path}: expected uint8 images of shape (n, 28, 28), found "
                       f"{images.dtype} {images.shape}")
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise IdxError(f"{labels_path}: expected a uint8 vector of labels, found "
                       f"{labels.dtype} {labels.shape}")
    if len(labels) != len(images):
        raise IdxError(f"{labels_path}: {len(labels)} labels for the {len(images)} images of "
                       f"{images_path}")
    if len(labels) and labels.max() >= len(spec.class_names):
        raise IdxError(f"{labels_path}: label {labels.max()} is out of range for "
                       f"{len(spec.class_names)} classes")


def load_data(name, *, mirrors=None, verbose=True):
    """Load dataset ``name`` ('mnist' or 'fashion_mnist') as Keras does.

    ``mirrors`` (base URLs) replaces the built-in download list; ``verbose`` reports downloads
    on stderr.  Raises DatasetNotFoundError saying where to put the files when they are absent
    and cannot be downloaded, and IdxError naming the file when one is malformed.
    """
    spec = _spec(name)
    cache = cache_dir(name)
    paths = _locate(spec, cache)
    if paths is None:
        os.makedirs(cache, exist_ok=True)
        for fname in FILES:
            if _existing(cache, fname):
                continue  # kept from an earlier, interrupted run
            failures = _download(spec, fname, cache, _mirrors(spec, mirrors), verbose)
            if failures is not None:
                raise _not_found(spec, cache, failures)
        paths = [_existing(cache, f) for f in FILES]
    x_train, y_train, x_test, y_test = (read_idx(p) for p in paths)
    _check(spec, x_train, y_train, paths[0], paths[1])
    _check(spec, x_test, y_test, paths[2], paths[3])
    return (x_train, y_train), (x_test, y_test)


def _module(name, doc):
    """A small module ``cyconv.keras.datasets.<name>``, as in Keras, with load_data and
    CLASS_NAMES."""
    spec = _SPECS[name]
    mod = types.ModuleType(f"{__name__}.{name}", doc)

    def load(*, mirrors=None, verbose=True):
        return load_data(name, mirrors=mirrors, verbose=verbose)

    load.__doc__ = (f"Load {spec.title}: ((x_train, y_train), (x_test, y_test)), uint8 images "
                    f"(n, 28, 28) and uint8 labels.  See cyconv.keras.datasets.load_data.")
    load.__qualname__ = load.__name__ = "load_data"
    load.__module__ = mod.__name__
    mod.load_data = load
    mod.CLASS_NAMES = spec.class_names
    mod.cache_dir = lambda: cache_dir(name)
    # Registered so that `import cyconv.keras.datasets.mnist` works as it does in Keras.
    sys.modules[mod.__name__] = mod
    return mod


mnist = _module("mnist", "MNIST handwritten digits: 60,000 training and 10,000 test images.")
fashion_mnist = _module("fashion_mnist", "Fashion-MNIST (Zalando): 60,000 training and 10,000 "
                                         "test images of clothing in 10 classes.")
