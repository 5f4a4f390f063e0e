"""Where the CLI's data comes from: ``--calib``/``--data`` specs (fashion-mnist, synthetic, an .npz, a folder of
images with its preprocessing flags), shared by ``quantize``, ``evaluate``, ``report``, ``run`` and ``tune``."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from .datasets import Dataset, fashion_mnist, load_npz


class DataError(ValueError):
    """A data spec that cannot be used; the message names it and what to do."""


def load_data(spec: str, lg, role: str, limit: int | None, seed: int = 0, args=None) -> Dataset:
    """``role`` is ``calib`` or ``eval``.  ``spec``: fashion-mnist | synthetic | FILE.npz | a folder of images
    (decoded lazily with the preprocessing of ``args``: ``--preprocess``, ``--resize`` ...)."""
    if spec == "fashion-mnist":
        return fashion_mnist("train" if role == "calib" else "test", limit=limit)
    if spec == "synthetic":
        shape = lg.layers["input"].out_shape if "input" in lg.layers else None
        if shape is None:
            raise DataError("synthetic data needs a model with one input")
        n = limit or 64
        rng = np.random.default_rng(seed if role == "calib" else seed + 1)
        return Dataset(rng.random((n,) + tuple(shape), dtype=np.float32), None,
                       f"synthetic: {n} uniform [0,1) inputs of shape {list(shape)}")
    p = Path(spec)
    if p.is_dir():
        from .images import ImageFolder

        folder = ImageFolder(p, image_preprocess(args), getattr(args, "labels", None), limit,
                             progress=not getattr(args, "quiet", False))
        for path, why in folder.skipped:
            print(f"skipped unreadable image {path}: {why}", file=sys.stderr)
        if folder.skipped:
            print(f"{len(folder.skipped)} unreadable files skipped in {p}", file=sys.stderr)
        want = tuple(lg.layers["input"].out_shape) if "input" in lg.layers else None
        if want is not None and tuple(folder.sample_shape) != want:
            raise DataError(f"images of {p} preprocess to {list(folder.sample_shape)} but the model's input is "
                           f"{list(want)} per image: set --preprocess imagenet or --resize/--crop/--channels/"
                           "--layout to match how the model was trained")
        return Dataset(folder.inputs, folder.labels, folder.source)
    if p.suffix == ".npz":
        ds = load_npz(p)
        if limit is not None and role == "calib":
            ds = Dataset(ds.inputs[:limit], None if ds.labels is None else ds.labels[:limit], ds.source)
        return ds
    if not p.exists():
        raise DataError(f"--calib/--data {spec!r}: no such file or folder; expected 'fashion-mnist', 'synthetic', "
                       "an .npz file or a folder of JPEG/PNG images")
    raise DataError(f"--calib/--data {spec!r}: expected 'fashion-mnist', 'synthetic', an .npz file or a folder of "
                   "JPEG/PNG images")


def image_preprocess(args):
    from .images import preprocess_from_args

    if args is None:
        return preprocess_from_args()
    return preprocess_from_args(args.preprocess, args.resize, args.crop, args.mean, args.std, args.scale,
                                args.channels, args.layout)


def preprocess_from_summary(args, summary: dict) -> None:
    """``evaluate``/``report`` of an image-folder model: the preprocessing ``quantize`` used, unless given."""
    pre = summary.get("preprocess")
    if not pre or any(getattr(args, k, None) is not None for k in
                      ("preprocess", "resize", "crop", "mean", "std", "scale", "channels", "layout")):
        return
    for k in ("resize", "crop", "mean", "std", "scale", "channels", "layout"):
        setattr(args, k, pre.get(k))


