#!/usr/bin/env python3
"""Write the small Fashion-MNIST subset bundled with tvm-fxp.

Reads Debian's ``dataset-fashion-mnist`` IDX files and writes

* ``tvm_fxp/data/fashion_mnist_subset.npz`` (np.savez_compressed, uint8):
  ``train_images`` (500, 28, 28) / ``train_labels`` (500,): the first 500
  training images, used for calibration;
  ``val_images`` (2000, 28, 28) / ``val_labels`` (2000,): the first 2000
  images of the validation split (training-file images 55000-56999, which the
  reference models were not trained on), scored on by the searches;
  ``test_images`` (2000, 28, 28) / ``test_labels`` (2000,): the first 2000 test
  images, used for evaluation;
* ``tvm_fxp/data/FASHION_MNIST_LICENSE.md``: provenance and the MIT license.

``tvm_fxp.datasets.fashion_mnist`` falls back to this subset when the Debian
package is not installed, converting the uint8 pixels to float32 / 255 exactly
as it does for the Debian files.

Usage: python examples/make_subset.py [--debian-dir DIR] [--out-dir DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tvm_fxp.datasets import DEBIAN_DIR, TRAIN_SIZE, read_idx  # noqa: E402

N_TRAIN = 500
N_VAL = 2000
N_TEST = 2000

FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}

MIT_LICENSE = """\
The MIT License (MIT) Copyright © [2017] Zalando SE, https://tech.zalando.com

Copyright (c) 2017 Zalando SE

Permission is hereby granted, free of charge, to any person obtaining a copy
of this software and associated documentation files (the "Software"), to deal
in the Software without restriction, including without limitation the rights
to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all
copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
SOFTWARE.
"""


def debian_version() -> str:
    try:
        out = subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}", "dataset-fashion-mnist"],
            capture_output=True, text=True, check=True,
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--debian-dir", type=Path, default=DEBIAN_DIR)
    ap.add_argument("--out-dir", type=Path, default=ROOT / "tvm_fxp" / "data")
    args = ap.parse_args()

    missing = [n for n in FILES.values() if not (args.debian_dir / n).is_file()]
    if missing:
        print(f"error: {', '.join(missing)} not found in {args.debian_dir}; "
              "run `apt-get install dataset-fashion-mnist`", file=sys.stderr)
        return 1

    full = {k: read_idx(args.debian_dir / n) for k, n in FILES.items()}
    arrays = {
        "train_images": full["train_images"][:N_TRAIN],
        "train_labels": full["train_labels"][:N_TRAIN],
        "val_images": full["train_images"][TRAIN_SIZE:TRAIN_SIZE + N_VAL],
        "val_labels": full["train_labels"][TRAIN_SIZE:TRAIN_SIZE + N_VAL],
        "test_images": full["test_images"][:N_TEST],
        "test_labels": full["test_labels"][:N_TEST],
    }
    for k, a in arrays.items():
        assert a.dtype == np.uint8, (k, a.dtype)
        arrays[k] = np.ascontiguousarray(a)

    args.out_dir.mkdir(parents=True, exist_ok=True)
    npz = args.out_dir / "fashion_mnist_subset.npz"
    np.savez_compressed(npz, **arrays)

    version = debian_version()
    hashes = "\n".join(
        f"| `{n}` | `{sha256(args.debian_dir / n)}` |" for n in FILES.values()
    )
    counts = {
        split: np.bincount(arrays[f"{split}_labels"], minlength=10).tolist()
        for split in ("train", "val", "test")
    }
    md = f"""\
# Fashion-MNIST subset: provenance and license

`fashion_mnist_subset.npz` in this directory is a small excerpt of
**Fashion-MNIST** by Zalando Research (upstream:
https://github.com/zalandoresearch/fashion-mnist), taken from the files shipped
by the Debian package **`dataset-fashion-mnist`** (version `{version}`,
installed under `{args.debian_dir}`). It is written by
`examples/make_subset.py` and is used by `tvm_fxp.datasets.fashion_mnist` only
when that package is not installed.

## What was taken

| key | shape | dtype | content |
| --- | --- | --- | --- |
| `train_images` | ({N_TRAIN}, 28, 28) | uint8 | the first {N_TRAIN} images of `train-images-idx3-ubyte` (calibration) |
| `train_labels` | ({N_TRAIN},) | uint8 | their labels, from `train-labels-idx1-ubyte` |
| `val_images` | ({N_VAL}, 28, 28) | uint8 | images {TRAIN_SIZE}-{TRAIN_SIZE + N_VAL - 1} of `train-images-idx3-ubyte`: the first {N_VAL} of the validation split (searches) |
| `val_labels` | ({N_VAL},) | uint8 | their labels |
| `test_images` | ({N_TEST}, 28, 28) | uint8 | the first {N_TEST} images of `t10k-images-idx3-ubyte` (evaluation) |
| `test_labels` | ({N_TEST},) | uint8 | their labels, from `t10k-labels-idx1-ubyte` |

Images are unmodified 8-bit pixels (0 = background); labels are the class
indices 0-9 (T-shirt/top, Trouser, Pullover, Dress, Coat, Sandal, Shirt,
Sneaker, Bag, Ankle boot). Per-class counts: train {counts['train']},
val {counts['val']}, test {counts['test']}.

## Splits

`tvm_fxp.datasets.fashion_mnist` splits the 60,000-image training file into
`"train"` (images 0-{TRAIN_SIZE - 1}; the reference models in `examples/models`
were trained on exactly these) and `"val"` (images {TRAIN_SIZE}-59999, never
trained on: the searches and every accuracy-driven choice, fine-tuning's model
selection included, use only these); `"test"` (the 10,000-image test file) is
used for reported results only, and cannot be read while a search runs.

SHA-256 of the source files:

| file | sha256 |
| --- | --- |
{hashes}

## License

Fashion-MNIST is distributed under the MIT (Expat) license; Debian's copyright
file lists it as `Copyright: 2017, Zalando SE`, `License: Expat`.

```
{MIT_LICENSE}```
"""
    lic = args.out_dir / "FASHION_MNIST_LICENSE.md"
    lic.write_text(md, encoding="utf-8")

    print(f"wrote {npz} ({npz.stat().st_size} bytes): "
          + ", ".join(f"{k} {a.shape}" for k, a in arrays.items()))
    print(f"wrote {lic}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
