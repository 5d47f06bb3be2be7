"""The ``cyconv`` command through subprocess: info, train, predict, and every error path.

Training runs once per session on a small data set written into a private CYCONV_HOME: the first
images of the real Fashion-MNIST where Debian's package is installed, else synthetic images.
"""

import json
import os
import re
import socket
import subprocess
import sys
import types

import numpy as np
import pytest

from cyconv.idx import write_idx
from cyconv.keras.datasets import FILES

DEBIAN = "/usr/share/datasets/fashion-mnist"
N_TRAIN, N_TEST = 2000, 500


def _env(home, **extra):
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env.update(CYCONV_HOME=str(home), PYTHONUNBUFFERED="1", **extra)
    return env


def _closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(*args, home, cwd=None, code=None, **env):
    """`python -m cyconv ARGS`, or with ``code`` a Python snippet calling cli.main(ARGS)."""
    if code is None:
        cmd = [sys.executable, "-m", "cyconv", *map(str, args)]
    else:
        cmd = [sys.executable, "-c", code + "\nfrom cyconv.cli import main\n"
               f"raise SystemExit(main({[str(a) for a in args]!r}))"]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env=_env(home, **env),
                          timeout=300)


def assert_one_line_error(r, *fragments, status=1):
    assert r.returncode == status, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("cyconv "), r.stderr
    for fragment in fragments:
        assert fragment in last, (fragment, last)


@pytest.fixture(scope="module")
def real():
    return all(os.path.isfile(os.path.join(DEBIAN, f)) for f in FILES)


@pytest.fixture(scope="module")
def home(tmp_path_factory, real):
    """A CYCONV_HOME whose fashion_mnist folder holds a small data set."""
    home = tmp_path_factory.mktemp("home")
    folder = home / "datasets" / "fashion_mnist"
    folder.mkdir(parents=True)
    if real:
        from cyconv.keras.datasets import fashion_mnist

        (x, y), (xt, yt) = fashion_mnist.load_data()
        arrays = [x[:N_TRAIN], y[:N_TRAIN], xt[:N_TEST], yt[:N_TEST]]
    else:
        print(f"Fashion-MNIST is not in {DEBIAN}: training on synthetic images")
        rng = np.random.default_rng(0)
        y, yt = rng.integers(0, 10, N_TRAIN, np.uint8), rng.integers(0, 10, N_TEST, np.uint8)
        # Each class lights its own band of rows: learnable in one epoch.
        def images(labels):
            x = rng.integers(0, 60, (len(labels), 28, 28)).astype(np.uint8)
            for i, label in enumerate(labels):
                x[i, 2 + 2 * label: 4 + 2 * label] = 250
            return x
        arrays = [images(y), y, images(yt), yt]
    for name, a in zip(FILES, arrays):
        write_idx(folder / name, a)
    return home


@pytest.fixture(scope="module")
def trained(home, tmp_path_factory):
    """One `cyconv train` run shared by the tests below: its result and its folder."""
    work = tmp_path_factory.mktemp("train")
    args = ["train", "--limit", N_TRAIN, "--epochs", 1, "--batch-size", 32, "--out", "m.npz",
            "--verbose", 2]
    try:
        import matplotlib  # noqa: F401

        args += ["--plot", "curves.png"]
    except ImportError:
        pass
    r = run(*args, home=home, cwd=work)
    assert r.returncode == 0, (r.stdout, r.stderr)
    return r, work


def test_info(tmp_path):
    r = run("info", home=tmp_path)
    assert r.returncode == 0, r.stderr
    assert re.search(r"^openmp\s*: (True|False)$", r.stdout, re.M)
    assert re.search(r"^threads\s*: \d+$", r.stdout, re.M)


def test_train_reports_and_saves(trained, real):
    r, work = trained
    m = re.search(r"test accuracy (\d\.\d+)", r.stdout)
    assert m, r.stdout
    assert float(m.group(1)) > (0.5 if real else 0.3)
    assert re.search(r"[\d.]+ s per epoch.*\d+ training images/s", r.stdout)
    assert (work / "m.npz").stat().st_size > 100_000  # 93,322 float32 parameters
    assert not [f for f in os.listdir(work) if f.endswith(".tmp")]


def test_plot_is_a_png(trained):
    r, work = trained
    if not (work / "curves.png").exists():
        pytest.skip("matplotlib is not installed")
    assert (work / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_without_matplotlib_says_how_to_install(tmp_path, home):
    r = run("train", "--plot", "c.png", home=home, cwd=tmp_path,
            code="import sys; sys.modules['matplotlib'] = None")
    assert_one_line_error(r, "pip install matplotlib", "cyconv[plot]")
    assert not os.listdir(tmp_path)  # refused before training, nothing written


@pytest.fixture(scope="module")
def pictures(tmp_path_factory, home):
    """PNG and JPEG files of test images: as stored, inverted and enlarged, and in colour."""
    from PIL import Image

    from cyconv.idx import read_idx

    folder = tmp_path_factory.mktemp("pictures")
    x = read_idx(home / "datasets" / "fashion_mnist" / FILES[2])
    Image.fromarray(x[0]).save(folder / "as-stored.png")
    big = Image.fromarray(255 - x[1]).resize((112, 112), Image.Resampling.NEAREST)
    big.save(folder / "dark-on-light.png")
    Image.fromarray(np.stack([x[2]] * 3, axis=-1)).resize((60, 90)).save(folder / "colour.jpg")
    # A dark object on a transparent (black, alpha 0) background: transparency counts as paper.
    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[6:34, 6:34, :3] = (255 - x[3])[:, :, None] // 3
    rgba[6:34, 6:34, 3] = np.where(x[3] > 30, 255, 0)
    Image.fromarray(rgba, "RGBA").save(folder / "transparent.png")
    return folder, x


def _ranked(stdout):
    return re.findall(r"^\s+(\d+)\. (.+?)\s+(\d+\.\d)%$", stdout, re.M)


def test_predict_prints_top3_with_class_names(trained, pictures, home):
    _, work = trained
    folder, x = pictures
    images = [folder / n for n in ("as-stored.png", "dark-on-light.png", "colour.jpg",
                                   "transparent.png")]
    # No --dataset: `cyconv train` saved the dataset's name with the model.
    r = run("predict", work / "m.npz", *images, home=home)
    assert r.returncode == 0, r.stderr
    ranked = _ranked(r.stdout)
    assert len(ranked) == 12
    from cyconv.keras.datasets import fashion_mnist

    assert {name for _, name, _ in ranked} <= set(fashion_mnist.CLASS_NAMES)
    for i in range(4):
        block = ranked[3 * i:3 * i + 3]
        assert [rank for rank, _, _ in block] == ["1", "2", "3"]
        p = [float(pct) for _, _, pct in block]
        assert p == sorted(p, reverse=True) and sum(p) <= 100.05
    lines = r.stdout.splitlines()
    assert lines[0] == str(images[0])  # already 28x28, light on dark: used as is
    assert "inverted" in lines[4] and "scaled to 28x28" in lines[4]
    assert "inverted" not in lines[8] and "scaled" in lines[8]
    assert "inverted" in lines[12] and "scaled" in lines[12]


def test_predict_agrees_with_the_model(trained, pictures, home):
    from cyconv.keras import models

    _, work = trained
    folder, x = pictures
    r = run("predict", work / "m.npz", folder / "as-stored.png", "--dataset", "fashion_mnist",
            "--top", 10, home=home)
    assert r.returncode == 0, r.stderr
    model = models.load_model(str(work / "m.npz"))
    logits = model.predict(x[:1, :, :, None] / 255.0, verbose=0)[0]
    p = np.exp(logits - logits.max())
    p /= p.sum()
    from cyconv.keras.datasets import fashion_mnist

    ranked = _ranked(r.stdout)
    assert [name for _, name, _ in ranked] == [fashion_mnist.CLASS_NAMES[k]
                                              for k in np.argsort(-p, kind="stable")]
    np.testing.assert_allclose([float(pct) for *_, pct in ranked], 100 * np.sort(p)[::-1],
                               atol=0.06)


def test_predict_with_a_model_of_unknown_origin(tmp_path, pictures, home):
    from cyconv.cli import seed_model

    seed_model().save(str(tmp_path / "other.npz"))
    folder, _ = pictures
    r = run("predict", tmp_path / "other.npz", folder / "as-stored.png", home=home)
    assert r.returncode == 0, r.stderr
    assert [name for _, name, _ in _ranked(r.stdout)][0].startswith("class ")
    r = run("predict", tmp_path / "other.npz", folder / "as-stored.png", "--dataset", "mnist",
            home=home)
    assert [name for _, name, _ in _ranked(r.stdout)][0] in "0123456789"


# --- errors: one line on stderr, status 1 (2 for the command line) ----------------------------

def test_predict_errors(trained, pictures, home, tmp_path):
    _, work = trained
    folder, _ = pictures
    model, image = work / "m.npz", folder / "as-stored.png"
    assert_one_line_error(run("predict", tmp_path / "none.npz", image, home=home), "none.npz",
                          "no such model file")
    (tmp_path / "junk.npz").write_bytes(b"not a model at all")
    assert_one_line_error(run("predict", tmp_path / "junk.npz", image, home=home), "junk.npz")
    (tmp_path / "cut.npz").write_bytes(model.read_bytes()[:5000])
    assert_one_line_error(run("predict", tmp_path / "cut.npz", image, home=home), "cut.npz")
    assert_one_line_error(run("predict", model, tmp_path / "no.png", home=home), "no.png",
                          "no such file")
    (tmp_path / "text.png").write_text("hello")
    assert_one_line_error(run("predict", model, image, tmp_path / "text.png", home=home),
                          "text.png", "not a readable image")
    (tmp_path / "cut.png").write_bytes(image.read_bytes()[:40])
    assert_one_line_error(run("predict", model, tmp_path / "cut.png", home=home), "cut.png")


def test_predict_without_pillow_says_how_to_install(trained, home):
    _, work = trained
    r = run("predict", work / "m.npz", "x.png", home=home,
            code="import sys; sys.modules['PIL'] = None")
    assert_one_line_error(r, "pip install Pillow", "cyconv[images]")


def test_train_errors(tmp_path):
    port = _closed_port()
    r = run("train", "--dataset", "mnist", home=tmp_path / "empty", cwd=tmp_path,
            CYCONV_DATASET_MIRRORS=f"http://127.0.0.1:{port}/")
    assert_one_line_error(r, str(tmp_path / "empty" / "datasets" / "mnist"),
                          "train-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
    r = run("train", "--out", tmp_path / "no" / "m.npz", home=tmp_path, cwd=tmp_path)
    assert_one_line_error(r, "folder", "does not exist")


def test_train_bad_dataset_file(tmp_path):
    folder = tmp_path / "datasets" / "mnist"
    folder.mkdir(parents=True)
    for name in FILES:
        (folder / name).write_bytes(b"\0\0\x08\x01\0\0\0\x05abc")
    r = run("train", "--dataset", "mnist", home=tmp_path, cwd=tmp_path)
    assert_one_line_error(r, str(folder / FILES[0]), "not a valid gzip file")


@pytest.mark.parametrize("args", [[], ["train", "--epochs", "0"], ["train", "--dataset", "cifar"],
                                  ["train", "--verbose", "3"], ["predict", "m.npz"], ["nope"]])
def test_command_line_errors_exit_2(tmp_path, args):
    r = run(*args, home=tmp_path, cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "usage: cyconv" in r.stderr


def test_bench_prints_a_table_and_writes_json_and_plot(tmp_path):
    pytest.importorskip("torch", reason="the ratio column and the plot need PyTorch")
    pytest.importorskip("matplotlib", reason="--plot needs matplotlib")
    out, png = tmp_path / "b.json", tmp_path / "b.png"
    r = run("bench", "--only", "conv3 b32", "pool2 b32", "--budget", "0.02", "--threads", "1",
            "--json", out, "--plot", png, home=tmp_path)
    assert r.returncode == 0, r.stderr
    rows = [line for line in r.stdout.splitlines() if line.startswith("seed ")]
    assert len(rows) == 4, r.stdout                     # 2 layers x (fwd, bwd)
    assert re.search(r"GEMM peak \(float32.*\): \d+ GFLOP/s", r.stdout)
    data = json.loads(out.read_text())
    assert data["timing"] == "steady"
    assert {res["case"] for res in data["results"]} == {"seed conv3 b32", "seed pool2 b32"}
    conv = [res for res in data["results"] if res["case"] == "seed conv3 b32"]
    assert all(res["seconds"] > 0 and res["ratio_vs_torch"] > 0 for res in conv)
    # the spread of the paired ratios beside their median (how it is computed: see
    # test_time_pairs_reports_the_median_and_quartiles_of_the_paired_ratios)
    assert all(len(res["ratio_quartiles"]) == 2 for res in conv)
    assert all(res["peak_percent"] > 0 for res in conv)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    r = run("bench", "--only", "pool2 b32", "--budget", "0.02", "--threads", "1",
            "--interleaved", "--json", out, home=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads(out.read_text())["timing"] == "interleaved"
    assert json.loads(out.read_text())["warmup"] == 0
    r = run("bench", "--only", "pool2 b32", "--budget", "0.02", "--threads", "1",
            "--warmup", "3", "--json", out, home=tmp_path)
    assert r.returncode == 0, r.stderr
    data = json.loads(out.read_text())
    assert (data["timing"], data["warmup"]) == ("steady", 3)


def test_bench_errors(tmp_path):
    assert_one_line_error(run("bench", "--only", "no such layer", home=tmp_path),
                          "matches no benchmark")
    assert_one_line_error(run("bench", "--threads", "0", home=tmp_path), "--threads")
    assert_one_line_error(run("bench", "--warmup", "0", home=tmp_path), "--warmup")
    r = run("bench", "--interleaved", "--warmup", "2", home=tmp_path)
    assert r.returncode == 2 and "not allowed with argument" in r.stderr, r.stderr


def test_bench_scaling_column(tmp_path):
    out = tmp_path / "s.json"
    r = run("bench", "--only", "conv3 b32", "--budget", "0.02", "--threads", "2", "--no-torch",
            "--scaling", "--json", out, home=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "x1thr" in r.stdout.splitlines()[0]
    data = json.loads(out.read_text())
    speedups = [res["speedup_vs_1_thread"] for res in data["results"]]
    assert len(speedups) == 2 and all(s > 0 for s in speedups)
    assert data["timing"] is None   # nothing was timed against PyTorch
    # the machine's own scaling in the same run, to read the column against
    assert re.search(r"GEMM on 2 threads against 1 .*: \d+\.\d\dx", r.stdout), r.stdout
    assert data["gemm_speedup_vs_1_thread"] > 0


def test_time_pairs_reports_the_median_and_quartiles_of_the_paired_ratios(monkeypatch):
    from cyconv import bench

    def fa():
        pass

    def fb():
        pass

    a_times = iter([1.0, 2.0, 3.0, 4.0, 5.0])
    monkeypatch.setattr(bench, "_repeats_for", lambda fn, budget: 5)
    monkeypatch.setattr(bench, "_time_after",
                        lambda fn, warmup: next(a_times) if fn is fa else 2.0)
    # paired ratios 0.5, 1, 1.5, 2, 2.5
    assert bench.time_pairs(fa, fb) == bench.Pairs(3.0, 2.0, 1.5, (1.0, 2.0))


def test_steady_pairs_time_each_call_after_its_own_untimed_ones():
    from cyconv import bench

    calls = []
    bench.time_pairs(lambda: calls.append("a"), lambda: calls.append("b"), budget=0, warmup=1)
    # after the first call of each, every timed call follows an untimed call of its own kind
    body = "".join(calls[2:])
    assert body and set(body.split("aabb")) == {""}, calls
    calls.clear()
    bench.time_pairs(lambda: calls.append("a"), lambda: calls.append("b"), budget=0, warmup=3)
    body = "".join(calls[2:])
    assert body and set(body.split("aaaabbbb")) == {""}, calls
    calls.clear()
    bench.time_pairs(lambda: calls.append("a"), lambda: calls.append("b"), budget=0)
    assert set("".join(calls).split("ab")) == {""}, calls


@pytest.mark.parametrize("warmup", [1, 0, 3])
def test_bench_times_each_library_after_calls_of_its_own_unless_interleaved(monkeypatch,
                                                                             warmup):
    from cyconv import bench

    seen = []
    monkeypatch.setattr(bench, "_torch", lambda: types.SimpleNamespace(set_num_threads=int))
    monkeypatch.setattr(bench, "_torch_fns", lambda *a: (lambda: None, lambda: None))
    monkeypatch.setattr(bench, "gemm_peak", lambda *a, **k: 1.0)

    def time_pairs(fa, fb, budget=1.0, warmup=0):
        seen.append(warmup)
        return bench.Pairs(1e-3, 2e-3, 0.5, (0.4, 0.7))

    monkeypatch.setattr(bench, "time_pairs", time_pairs)
    case = [c for c in bench.default_cases() if c.name == "seed pool2 b32"]
    results = bench.run(case, warmup=warmup)[0]
    assert seen == [warmup] * 2 and [r.ratio_vs_torch for r in results] == [0.5] * 2
    assert [r.ratio_quartiles for r in results] == [(0.4, 0.7)] * 2
    assert bench.format_row(results[0]).split()[-2:] == ["0.40-0.70", "-"]
