"""Where the CLI's data comes from: ``--calib``/``--data`` specs (fashion-mnist, synthetic, an .npz, a folder of
images with its preprocessing flags), shared by ``quantize``, ``evaluate``, ``report``, ``run`` and ``tune``."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .datasets import Dataset, fashion_mnist, load_npz


class DataError(ValueError):
    """A data spec that cannot be used; the message names it and what to do."""


@dataclass(frozen=True, eq=False)
class MultiInputData:
    """The data of a model with several inputs: ``inputs`` holds one float32 array per model input, in the
    model's input order, all with the same number of samples (as ``Runner.run`` and ``calibrate`` take them)."""

    inputs: list
    labels: np.ndarray | None
    source: str

    def __len__(self) -> int:
        return len(self.inputs[0])


def load_data(spec: str, lg, role: str, limit: int | None, seed: int = 0, args=None) -> Dataset:
    """``role`` is ``calib`` or ``eval``.  ``spec``: fashion-mnist | synthetic | FILE.npz | a folder of images
    (decoded lazily with the preprocessing of ``args``: ``--preprocess``, ``--resize`` ...)."""
    inputs = model_inputs(lg)
    if spec == "synthetic":
        n = limit or 64
        rng = np.random.default_rng(seed if role == "calib" else seed + 1)
        arrays = [rng.random((n,) + tuple(shape), dtype=np.float32) for shape in inputs.values()]
        shapes = "; ".join(f"{name} {list(shape)}" for name, shape in inputs.items())
        if len(arrays) > 1:
            return MultiInputData(arrays, None, f"synthetic: {n} uniform [0,1) inputs of shapes {shapes}")
        return Dataset(arrays[0], None, f"synthetic: {n} uniform [0,1) inputs of shape {list(arrays[0].shape[1:])}")
    p = Path(spec)
    if len(inputs) > 1:
        if p.suffix == ".npz" and p.is_file():
            return _multi_input_npz(p, inputs, limit if role == "calib" else None)
        raise DataError(f"--calib/--data {spec!r}: the model has {len(inputs)} inputs ({', '.join(inputs)}); give "
                        "'synthetic' or an .npz with one array per input name (and optional 'labels')")
    if spec == "fashion-mnist":
        return fashion_mnist("train" if role == "calib" else "test", limit=limit)
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


def model_inputs(lg) -> dict:
    """``{input name: per-image shape}`` of a layer graph's inputs, in the model's parameter order."""
    ins = [layer for layer in lg.layers.values() if layer.op == "input"]
    if len(ins) == 1:
        return {"input": tuple(ins[0].out_shape)}
    return {layer.name[len("input_"):]: tuple(layer.out_shape) for layer in ins}   # layers "input_<name>"


def count(inputs) -> int:
    """How many samples ``inputs`` holds (an array, or a list with one array per model input)."""
    return len(inputs[0]) if isinstance(inputs, (list, tuple)) else len(inputs)


def _multi_input_npz(path: Path, inputs: dict, limit: int | None) -> Dataset:
    """One float array per model input, each under its input's name (same number of samples), labels optional."""
    try:
        z = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise DataError(f"{path}: not a readable .npz archive ({e})") from None
    with z:
        missing = [name for name in inputs if name not in z.files]
        if missing:
            raise DataError(f"{path}: no array for the model input(s) {missing}; the archive holds {sorted(z.files)}"
                            f" (one array per input name: {', '.join(inputs)})")
        arrays = [np.asarray(z[name]) for name in inputs]
        labels = np.asarray(z["labels"]).astype(np.int64) if "labels" in z.files else None
    for (name, shape), a in zip(inputs.items(), arrays):
        if a.dtype.kind not in "uif" or tuple(a.shape[1:]) != shape or len(a) == 0 or not np.all(np.isfinite(a)):
            raise DataError(f"{path}: {name!r} must be a finite numeric array of shape [N, {', '.join(map(str, shape))}]"
                            f", got {a.dtype} {list(a.shape)}")
    if len({len(a) for a in arrays}) != 1 or (labels is not None and len(labels) != len(arrays[0])):
        raise DataError(f"{path}: the inputs (and labels) hold different numbers of samples: "
                        f"{[len(a) for a in arrays] + ([len(labels)] if labels is not None else [])}")
    arrays = [a[:limit].astype(np.float32) for a in arrays]
    return MultiInputData(arrays, None if labels is None else labels[:limit],
                          f"{path} ({len(arrays[0])} samples, {len(arrays)} inputs)")


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


