"""Tests of examples/python/fashion_mnist.py, the data and models module the
Python examples and tests/bench/torch_baselines.py share: load() on the real
dataset (skipped when Debian's dataset-fashion-mnist is missing) and on
damaged files, shard(), fold_split() (k-fold cross-validation) and the
example script's --folds/--fold (its evaluator on a real shard), and the
models' outputs.

  /usr/bin/python3 -m pytest tests/python/test_fashion_mnist_module.py
"""
import gzip
import os
import re
import struct
import subprocess
import sys

import numpy as np
import pytest

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
import torch  # noqa: E402

EXAMPLES = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                        "..", "..", "examples", "python")
sys.path.insert(0, EXAMPLES)
import fashion_mnist as fm  # noqa: E402
import train_fashion_mnist as tfm  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def dataset():
    try:
        return {split: fm.load(split) for split in ("train", "test")}
    except fm.DatasetError as e:
        pytest.skip(f"Fashion-MNIST is not installed: {e}")


@pytest.mark.parametrize("split,n", [("train", 60000), ("test", 10000)])
def test_load_shapes_dtypes_ranges(dataset, split, n):
    x, y = dataset[split]
    assert x.shape == (n, 1, 28, 28) and x.dtype == torch.float32
    assert y.shape == (n,) and y.dtype == torch.int64
    assert x.min().item() == 0.0 and x.max().item() == 1.0
    assert torch.bincount(y, minlength=10).tolist() == [n // 10] * 10


def test_load_normalize_standardises(dataset):
    x, _ = fm.load("test", normalize=True)
    raw, _ = dataset["test"]
    assert torch.allclose(x, (raw - fm.MEAN) / fm.STD)
    # The training set's own statistics are what MEAN and STD say.
    train, _ = dataset["train"]
    assert abs(train.mean().item() - fm.MEAN) < 1e-3 and abs(train.std().item() - fm.STD) < 1e-3


def _write_idx(path, array):
    with gzip.open(path, "wb") as f:
        f.write(bytes([0, 0, 0x08, array.ndim]) + struct.pack(">" + "I" * array.ndim,
                                                             *array.shape) + array.tobytes())


def test_load_reads_gzipped_idx(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(10000, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=10000, dtype=np.uint8)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", images)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", labels)
    x, y = fm.load("test", str(tmp_path))
    assert np.array_equal((x[:, 0].numpy() * 255).round().astype(np.uint8), images)
    assert np.array_equal(y.numpy(), labels)


def test_missing_files_name_the_package(tmp_path):
    with pytest.raises(fm.DatasetError, match="dataset-fashion-mnist") as e:
        fm.load("train", str(tmp_path))
    assert "train-images-idx3-ubyte" in str(e.value) and str(tmp_path) in str(e.value)


def test_damaged_files_are_a_dataset_error(tmp_path):
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(b"not gzip")
    with pytest.raises(fm.DatasetError, match="t10k-images"):
        fm.load("test", str(tmp_path))
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", np.zeros((5, 28, 28), np.uint8))
    with pytest.raises(fm.DatasetError, match="expected 10000 items"):
        fm.load("test", str(tmp_path))


def test_load_rejects_unknown_split():
    with pytest.raises(ValueError, match="'train' or 'test'"):
        fm.load("validation")


@pytest.mark.parametrize("n,world", [(60000, 2), (10, 3), (7, 7), (5, 1), (3, 4)])
def test_shard_disjoint_and_covering(n, world):
    x = torch.arange(n).float().reshape(n, 1)
    y = torch.arange(n)
    parts = [fm.shard(x, y, r, world) for r in range(world)]
    seen = torch.cat([py for _, py in parts])
    assert seen.tolist() == list(range(n))  # every item once, in order
    for px, py in parts:
        assert torch.equal(px[:, 0].long(), py)  # x and y stay paired
    sizes = [len(py) for _, py in parts]
    assert max(sizes) - min(sizes) <= 1


def test_shard_rejects_bad_rank():
    x, y = torch.zeros(4, 1), torch.zeros(4, dtype=torch.int64)
    for rank, world in [(2, 2), (-1, 2), (0, 0)]:
        with pytest.raises(ValueError):
            fm.shard(x, y, rank, world)


@pytest.mark.parametrize("n,folds", [(10, 2), (10, 3), (7, 7), (101, 5), (60000, 5)])
def test_fold_split_disjoint_covering_and_balanced_in_size(n, folds):
    x = torch.arange(n).float().reshape(n, 1)
    y = torch.arange(n)
    validated = []
    sizes = []
    for fold in range(folds):
        xt, yt, xv, yv = fm.fold_split(x, y, folds, fold)
        assert len(xt) + len(xv) == n
        assert torch.equal(xv[:, 0].long(), yv) and torch.equal(xt[:, 0].long(), yt)  # paired
        assert ((yv % folds) == fold).all()  # the rule: item j is in fold j mod folds
        assert set(yt.tolist()).isdisjoint(yv.tolist())
        assert sorted(yt.tolist() + yv.tolist()) == list(range(n))  # covering
        assert yv.tolist() == sorted(yv.tolist())  # order kept
        validated += yv.tolist()
        sizes.append(len(yv))
    assert sorted(validated) == list(range(n))  # every item validated once
    assert max(sizes) - min(sizes) <= 1


def test_fold_split_is_class_balanced_on_a_set_sorted_by_class():
    y = torch.arange(10).repeat_interleave(30)  # 10 classes of 30, sorted
    x = torch.zeros(len(y), 1, 28, 28)
    for fold in range(5):
        _, yt, _, yv = fm.fold_split(x, y, 5, fold)
        assert torch.bincount(yv, minlength=10).tolist() == [6] * 10
        assert torch.bincount(yt, minlength=10).tolist() == [24] * 10


def test_fold_split_takes_numpy_arrays():
    x, y = np.arange(12).reshape(6, 2), np.arange(6)
    xt, yt, xv, yv = fm.fold_split(x, y, 3, 1)
    assert yv.tolist() == [1, 4] and yt.tolist() == [0, 2, 3, 5]
    assert xv.tolist() == [[2, 3], [8, 9]]


@pytest.mark.parametrize("folds,fold,n,message", [
    (1, 0, 10, "folds must be an integer >= 2"),
    (0, 0, 10, "folds must be an integer >= 2"),
    (5, 5, 10, r"fold 5 is not in \[0, 5\)"),
    (5, -1, 10, r"fold -1 is not in \[0, 5\)"),
    (5, 0, 4, "5 folds need at least 5 items, there are 4"),
])
def test_fold_split_refuses_bad_arguments(folds, fold, n, message):
    x, y = torch.zeros(n, 1), torch.zeros(n, dtype=torch.int64)
    with pytest.raises(ValueError, match=message):
        fm.fold_split(x, y, folds, fold)


def test_fold_split_refuses_unpaired_x_and_y():
    with pytest.raises(ValueError, match="x has 4 items but y has 3"):
        fm.fold_split(torch.zeros(4, 1), torch.zeros(3), 2, 0)


@pytest.mark.parametrize("argv,message", [
    (["--fold", "1"], "--fold 1 needs --folds K"),
    (["--folds", "1", "--fold", "0"], "--folds must be at least 2"),
    (["--folds", "5"], "--folds 5 needs --fold i"),
    (["--folds", "5", "--fold", "5"], r"--fold must be in \[0, 5\)"),
])
def test_train_script_refuses_bad_folds_with_exit_two(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        tfm.parse_args(argv)
    assert e.value.code == 2
    assert re.search(message, capsys.readouterr().err)


def test_train_script_takes_folds():
    args = tfm.parse_args(["--folds", "5", "--fold", "4"])
    assert (args.folds, args.fold) == (5, 4)
    assert tfm.fold_name(args) == "validation fold 4 of 5"
    args = tfm.parse_args([])
    assert (args.folds, args.fold) == (0, None)


def test_train_script_evaluator_scores_the_validation_fold(dataset, shards, tmp_path):
    """The example's evaluator with --folds 5 --fold 2 scores fold 2 of the
    training set (12,000 images) and reports that many to the shards."""
    pskit = pytest.importorskip("pskit")
    address = shards(1)
    build = os.environ.get("PSKIT_BUILD_DIR", "build")
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "PSKIT_SHARDS": address[0],
           "PYTHONPATH": os.path.join(os.path.abspath(build), "python"),
           "PSKIT_ROLE": "evaluator", "PSKIT_NAMESPACE": "fold2"}
    env.pop("RANK", None)
    r = subprocess.run(
        [sys.executable, os.path.join(EXAMPLES, "train_fashion_mnist.py"), "--model", "mlp",
         "--folds", "5", "--fold", "2", "--max_seconds", "1", "--eval_interval_s", "0.5"],
        capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "evaluator: scoring validation fold 2 of 5 (12000 samples)" in r.stdout
    assert "; scored on validation fold 2 of 5" in r.stdout
    [status] = pskit.Client(address).status()
    [ns] = [n for n in status["namespaces"] if n["name"] == "fold2"]
    last = ns.get("last_evaluation", ns.get("lastEvaluation"))
    assert int(last["samples"]) == 12000


@pytest.mark.parametrize("make", [fm.cnn, fm.mlp])
def test_models_give_ten_logits(make):
    model = make()
    out = model(torch.rand(5, 1, 28, 28))
    assert out.shape == (5, 10) and out.dtype == torch.float32
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_mlp_is_psworkers_784_256_128_10():
    shapes = [tuple(p.shape) for p in fm.mlp().parameters()]
    assert shapes == [(256, 784), (256,), (128, 256), (128,), (10, 128), (10,)]


def test_evaluate_loss_and_accuracy():
    class Fixed(torch.nn.Module):
        """Predicts class 0 with logit 0 for every other class at -inf-ish."""

        def forward(self, x):
            out = torch.full((len(x), 10), -30.0)
            out[:, 0] = 0.0
            return out

    x = torch.zeros(250, 1, 28, 28)
    y = torch.zeros(250, dtype=torch.int64)
    y[:50] = 3  # 200 of 250 right
    model = Fixed().train()
    loss, acc = fm.evaluate(model, x, y, batch=64)
    assert acc == pytest.approx(0.8)
    assert loss == pytest.approx(50 * 30.0 / 250, rel=1e-4)
    assert model.training  # mode restored
