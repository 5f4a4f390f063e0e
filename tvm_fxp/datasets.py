"""Evaluation/calibration data sets for tvm-fxp (numpy only).

Fashion-MNIST comes from Debian's ``dataset-fashion-mnist`` package when it is
installed (``/usr/share/datasets/fashion-mnist``), otherwise from a small subset
bundled with tvm-fxp (``tvm_fxp/data/fashion_mnist_subset.npz``, written by
``examples/make_subset.py``; provenance and license in
``tvm_fxp/data/FASHION_MNIST_LICENSE.md``).

Images are always returned as float32 ``(N, 1, 28, 28)`` arrays holding
``pixel / 255`` in ``[0, 1]``; the reference models in ``examples/models`` take
exactly that as input (no mean/std normalisation outside the model).
"""

from __future__ import annotations

import gzip
import math
import os
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "DEBIAN_DIR",
    "SUBSET_PATH",
    "Dataset",
    "read_idx",
    "fashion_mnist",
    "SPLITS",
    "TestSplitGuard",
    "TRAIN_SIZE",
    "VAL_SIZE",
    "load_npz",
]

DEBIAN_DIR = Path(os.environ.get("TVM_FXP_FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist"))
SUBSET_PATH = Path(__file__).parent / "data" / "fashion_mnist_subset.npz"

# IDX type codes -> big-endian numpy dtypes.
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

# split -> (images file stem, labels file stem) in the Debian directory.
_SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "val": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
# The validation split is the last VAL_SIZE images of the Debian training
# file; "train" is the images before it. The reference models were trained on
# "train" only, so "val" is data they never saw (searches score plans on it)
# and "test" stays for reported results.
TRAIN_FILE_SIZE = 60000
VAL_SIZE = 5000
TRAIN_SIZE = TRAIN_FILE_SIZE - VAL_SIZE
_SPLIT_SIZES = {"train": TRAIN_SIZE, "val": VAL_SIZE, "test": 10000}
SPLITS = tuple(_SPLIT_FILES)


class TestSplitGuard:
    """Refuse to load the Fashion-MNIST test split while active.

    Searches and every accuracy-driven choice must use the validation split;
    the test split is for reported results only. ``with TestSplitGuard(why):``
    makes :func:`fashion_mnist` raise for ``"test"`` (the methods' searches run
    under it, and a test trips it to check that no search reads test data).
    """

    _active: list[str] = []

    def __init__(self, why: str):
        self.why = why

    def __enter__(self):
        TestSplitGuard._active.append(self.why)
        return self

    def __exit__(self, *exc):
        TestSplitGuard._active.pop()
        return False

    @classmethod
    def check(cls, split: str) -> None:
        if split == "test" and cls._active:
            raise RuntimeError(
                f"the Fashion-MNIST test split was requested during {cls._active[-1]}; "
                "searches may only use the 'val' split (test is for reported results)"
            )


@dataclass(frozen=True, eq=False)
class Dataset:
    """A batch of model inputs with optional integer class labels.

    ``inputs`` is float32 with the batch on axis 0 (for Fashion-MNIST
    ``(N, 1, 28, 28)`` in ``[0, 1]`` = pixel/255); ``labels`` is int64 ``(N,)``
    or ``None``; ``source`` says in words where the data came from.
    (``eq=False``: datasets compare by identity, numpy arrays have no single
    truth value.)
    """

    inputs: np.ndarray
    labels: np.ndarray | None
    source: str

    def __post_init__(self) -> None:
        lazy = not isinstance(self.inputs, np.ndarray) and hasattr(self.inputs, "__getitem__")
        if not lazy and (not isinstance(self.inputs, np.ndarray) or self.inputs.dtype != np.float32):
            raise TypeError("Dataset.inputs must be a float32 numpy array (or a lazily decoded image folder)")
        if self.inputs.ndim < 1 or self.inputs.shape[0] == 0:
            raise ValueError("Dataset.inputs must have a non-empty batch axis 0")
        if self.labels is not None:
            if not isinstance(self.labels, np.ndarray) or self.labels.dtype != np.int64:
                raise TypeError("Dataset.labels must be an int64 numpy array or None")
            if self.labels.shape != (self.inputs.shape[0],):
                raise ValueError(
                    f"Dataset.labels has shape {self.labels.shape}, expected "
                    f"({self.inputs.shape[0]},) to match inputs"
                )

    def __len__(self) -> int:
        return int(self.inputs.shape[0])


# --------------------------------------------------------------------------
# IDX
# --------------------------------------------------------------------------


def _read_bytes(path: Path) -> bytes:
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError
        raise ValueError(f"{path}: corrupt or truncated gzip stream ({exc})") from exc


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (plain or gzip-compressed) into a native-endian array.

    Format: two zero bytes, a type byte (0x08 uint8, 0x09 int8, 0x0B int16,
    0x0C int32, 0x0D float32, 0x0E float64), a dimension-count byte, one
    big-endian uint32 per dimension, then the big-endian data in C order.
    Raises ``ValueError`` naming the file if it is truncated, has trailing
    bytes, or its header is malformed.
    """
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4:
        raise ValueError(f"{path}: not an IDX file: only {len(data)} bytes, header needs 4")
    if data[0] != 0 or data[1] != 0:
        raise ValueError(
            f"{path}: not an IDX file: magic number starts with "
            f"0x{data[0]:02x}{data[1]:02x}, expected 0x0000"
        )
    code, ndim = data[2], data[3]
    if code not in _IDX_DTYPES:
        raise ValueError(f"{path}: unknown IDX data type code 0x{code:02x}")
    if ndim == 0:
        raise ValueError(f"{path}: IDX header declares 0 dimensions")
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise ValueError(
            f"{path}: truncated IDX header: {ndim} dimensions need {header_len} bytes, "
            f"file has {len(data)}"
        )
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = _IDX_DTYPES[code]
    expected = math.prod(shape) * dtype.itemsize
    actual = len(data) - header_len
    if actual < expected:
        raise ValueError(
            f"{path}: truncated IDX data: shape {shape} of {dtype.newbyteorder('=')} needs "
            f"{expected} bytes, file has {actual}"
        )
    if actual > expected:
        raise ValueError(
            f"{path}: malformed IDX file: {actual - expected} unexpected trailing bytes "
            f"after shape {shape} data"
        )
    arr = np.frombuffer(data, dtype=dtype, offset=header_len).reshape(shape)
    return arr.astype(dtype.newbyteorder("="))  # native byte order, writable copy


# --------------------------------------------------------------------------
# Fashion-MNIST
# --------------------------------------------------------------------------


def _pixels_to_inputs(images: np.ndarray) -> np.ndarray:
    """uint8 (N, 28, 28) -> float32 (N, 1, 28, 28) in [0, 1]."""
    return (images.astype(np.float32) / np.float32(255.0))[:, None, :, :]


def _check_fmnist(images: np.ndarray, labels: np.ndarray, where: str) -> None:
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
        raise ValueError(
            f"{where}: expected uint8 images of shape (N, 28, 28), got "
            f"{images.dtype} {images.shape}"
        )
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise ValueError(
            f"{where}: {images.shape[0]} images but labels of shape {labels.shape}"
        )
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise ValueError(f"{where}: labels outside 0..9")


def _find_debian(split: str) -> tuple[Path, Path] | None:
    found = []
    for stem in _SPLIT_FILES[split]:
        for name in (stem + ".gz", stem):
            p = Path(DEBIAN_DIR) / name
            if p.is_file():
                found.append(p)
                break
        else:
            return None
    return found[0], found[1]


def fashion_mnist(split: str, limit: int | None = None) -> Dataset:
    """Fashion-MNIST ``"train"``, ``"val"`` or ``"test"`` split as a :class:`Dataset`.

    ``"train"`` is the first 55,000 images of the Fashion-MNIST training file
    (the reference models were trained on exactly these), ``"val"`` the last
    5,000 (never trained on: searches and accuracy-driven choices use it),
    ``"test"`` the 10,000 test images (reported results only). Uses Debian's
    ``dataset-fashion-mnist`` files when present, else the bundled subset (the
    first 500 training, the first 2,000 validation and the first 2,000 test
    images). ``limit`` keeps only the first ``limit`` images of the split.
    """
    if split not in _SPLIT_FILES:
        raise ValueError(f"split must be one of {', '.join(map(repr, SPLITS))}, got {split!r}")
    TestSplitGuard.check(split)
    if limit is not None:
        if isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 1:
            raise ValueError(f"limit must be a positive integer or None, got {limit!r}")
        limit = int(limit)

    debian = _find_debian(split)
    if debian is not None:
        img_path, lbl_path = debian
        images = read_idx(img_path)
        labels = read_idx(lbl_path)
        _check_fmnist(images, labels, str(img_path))
        if split in ("train", "val"):
            if images.shape[0] != TRAIN_FILE_SIZE:
                raise ValueError(f"{img_path}: {images.shape[0]} images, expected the "
                                 f"{TRAIN_FILE_SIZE} of the Fashion-MNIST training file")
            cut = slice(0, TRAIN_SIZE) if split == "train" else slice(TRAIN_SIZE, TRAIN_FILE_SIZE)
            images, labels = images[cut], labels[cut]
        origin = "Debian dataset-fashion-mnist"
    elif Path(SUBSET_PATH).is_file():
        try:
            with np.load(SUBSET_PATH, allow_pickle=False) as z:
                images = z[f"{split}_images"]
                labels = z[f"{split}_labels"]
        except (KeyError, ValueError, OSError, zipfile.BadZipFile) as exc:
            raise ValueError(f"{SUBSET_PATH}: unreadable Fashion-MNIST subset ({exc}); "
                             "rewrite it with examples/make_subset.py") from exc
        _check_fmnist(images, labels, str(SUBSET_PATH))
        origin = None
    else:
        raise FileNotFoundError(
            f"Fashion-MNIST {split} split not found: neither {DEBIAN_DIR}/"
            f"{_SPLIT_FILES[split][0]}.gz nor the bundled subset {SUBSET_PATH} exists. "
            "Install it with `apt-get install dataset-fashion-mnist`."
        )

    total = images.shape[0]
    if limit is not None and limit < total:
        images, labels = images[:limit], labels[:limit]
    n = images.shape[0]
    if origin is not None:
        count = f"{n} images" if n == total else f"first {n} of {total} images"
        where = {"train": " (training images 0-54999)", "val": " (training images 55000-59999)"}.get(split, "")
        source = f"fashion-mnist {split} split{where}, {count}, {origin}"
    else:
        count = f"{n} {split} images" if n == total else f"first {n} of {total} {split} images"
        source = f"bundled subset ({count})"
    return Dataset(
        inputs=np.ascontiguousarray(_pixels_to_inputs(images)),
        labels=labels.astype(np.int64),
        source=source,
    )


# --------------------------------------------------------------------------
# User-supplied .npz
# --------------------------------------------------------------------------


def _pick(z, names: tuple[str, ...], path: Path, what: str, required: bool):
    present = [n for n in names if n in z.files]
    if len(present) > 1:
        raise ValueError(f"{path}: ambiguous {what}: both {' and '.join(map(repr, present))} present")
    if not present:
        if required:
            raise ValueError(
                f"{path}: no {what} array: expected key {' or '.join(map(repr, names))}, "
                f"found {sorted(z.files)}"
            )
        return None, None
    try:
        return present[0], z[present[0]]
    except ValueError as exc:  # object arrays (pickle is refused), bad .npy header
        raise ValueError(f"{path}: array {present[0]!r} could not be loaded ({exc})") from exc


def load_npz(path: str | os.PathLike) -> Dataset:
    """Load inputs (key ``inputs`` or ``x``) and optional labels (``labels`` or
    ``y``) from an ``.npz`` file.

    Inputs need a non-empty batch axis 0 and finite numeric values; they are
    converted to float32 (uint8 inputs are taken as 8-bit pixels and scaled by
    1/255 like :func:`fashion_mnist`; other dtypes keep their values). Labels
    must be a 1-D array of non-negative integers, one per input. Raises
    ``ValueError`` naming the file and the problem.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    with open(path, "rb") as f:
        magic = f.read(6)
    if magic == b"\x93NUMPY":
        raise ValueError(f"{path}: is a single .npy array, expected an .npz archive with key 'inputs'")
    if magic[:2] != b"PK":
        raise ValueError(f"{path}: not an .npz archive (no zip signature)")
    try:
        z = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{path}: not a readable .npz archive ({exc})") from exc
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise ValueError(f"{path}: is a single .npy array, expected an .npz archive with key 'inputs'")
    with z:
        try:
            in_key, x = _pick(z, ("inputs", "x"), path, "inputs", required=True)
            lbl_key, y = _pick(z, ("labels", "y"), path, "labels", required=False)
        except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as exc:
            raise ValueError(f"{path}: corrupt .npz archive ({exc})") from exc

    if x.dtype.kind not in "uif":
        raise ValueError(f"{path}: {in_key!r} must be numeric (int/float), got dtype {x.dtype}")
    if x.ndim < 1:
        raise ValueError(f"{path}: {in_key!r} is a scalar, expected a batch of inputs on axis 0")
    if x.size == 0:
        raise ValueError(f"{path}: {in_key!r} is empty (shape {x.shape})")
    scaled = x.dtype == np.uint8
    with np.errstate(over="ignore"):  # float64 beyond float32 range -> inf, reported below
        if scaled:
            inputs = x.astype(np.float32) / np.float32(255.0)
        else:
            inputs = x.astype(np.float32)
    if not np.all(np.isfinite(inputs)):
        bad = int(np.size(inputs) - np.count_nonzero(np.isfinite(inputs)))
        raise ValueError(
            f"{path}: {in_key!r} has {bad} non-finite values (NaN/inf, or out of float32 range)"
        )

    labels = None
    if y is not None:
        if y.dtype.kind not in "uif":
            raise ValueError(f"{path}: {lbl_key!r} must be numeric (int), got dtype {y.dtype}")
        if y.ndim != 1:
            raise ValueError(f"{path}: {lbl_key!r} must be 1-D, got shape {y.shape}")
        if y.shape[0] != inputs.shape[0]:
            raise ValueError(
                f"{path}: {lbl_key!r} has {y.shape[0]} entries but {in_key!r} has "
                f"{inputs.shape[0]} inputs"
            )
        if y.dtype.kind == "f":
            if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
                raise ValueError(f"{path}: {lbl_key!r} must hold integer class indices")
        if y.min() < 0:
            raise ValueError(f"{path}: {lbl_key!r} has negative class indices")
        labels = y.astype(np.int64)

    desc = f"{path} ({inputs.shape[0]} inputs"
    if scaled:
        desc += ", uint8 scaled by 1/255"
    desc += f", {lbl_key!r} labels)" if labels is not None else ", no labels)"
    return Dataset(inputs=np.ascontiguousarray(inputs), labels=labels, source=desc)
