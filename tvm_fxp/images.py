"""Folders of JPEG/PNG images as model inputs (Pillow), decoded lazily, one chunk at a time.

    folder = ImageFolder("calib/", PRESETS["imagenet"])
    folder.inputs[0:8]        # float32 (8, 3, 224, 224), decoded now; nothing else is kept in memory

Preprocessing follows how the model was trained: ``resize`` (the short side, bilinear; or ``HxW``), a
``crop`` at the centre, ``scale`` (pixel / 255 by default), per-channel ``mean``/``std``, channel order
(``RGB``, ``BGR`` or ``L`` for grey) and ``layout`` (``NCHW`` or ``NHWC``).  The ``imagenet`` preset is
torchvision's: resize 256, centre crop 224, RGB, mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225), NCHW.

Labels come from sub-folder names (``DIR/<class>/*.jpg``): sorted, index = position, like torchvision's
``ImageFolder``; or, with a labels file (one class per line in the model's class-index order, e.g. the
ImageNet order; a line's first word may be the folder name, ``n01440764 tench``), index = the line whose
name or first word is the folder's name.  Images directly in ``DIR`` have no labels.

Files Pillow cannot decode are listed in ``skipped`` and counted, never fatal; the folder is scanned once
(each image fully decoded and dropped) so the number of inputs is known before any chunk is read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


class ImageDataError(ValueError):
    """A folder or preprocessing spec that cannot be used; the message names it and what to do."""


@dataclass(frozen=True)
class Preprocess:
    resize: tuple | None = None          # (h, w), or (s,) = the short side to s keeping the aspect ratio
    crop: tuple | None = None            # (h, w) at the centre
    mean: tuple = (0.0,)
    std: tuple = (1.0,)
    scale: float = 1.0 / 255.0
    channels: str = "RGB"                # RGB | BGR | L
    layout: str = "NCHW"                 # NCHW | NHWC

    def __post_init__(self):
        if self.channels not in ("RGB", "BGR", "L"):
            raise ImageDataError(f"channels {self.channels!r}: expected RGB, BGR or L")
        if self.layout not in ("NCHW", "NHWC"):
            raise ImageDataError(f"layout {self.layout!r}: expected NCHW or NHWC")
        c = self.n_channels
        for name in ("mean", "std"):
            v = getattr(self, name)
            if len(v) not in (1, c):
                raise ImageDataError(f"{name} {list(v)} has {len(v)} values; the {self.channels} images have {c} "
                                     "channels (give 1 or one per channel)")
        if any(s == 0 for s in self.std):
            raise ImageDataError(f"std {list(self.std)} contains 0")

    @property
    def n_channels(self) -> int:
        return 1 if self.channels == "L" else 3

    def to_json(self) -> dict:
        return {"resize": None if self.resize is None else list(self.resize),
                "crop": None if self.crop is None else list(self.crop), "mean": list(self.mean),
                "std": list(self.std), "scale": self.scale, "channels": self.channels, "layout": self.layout}

    def __call__(self, img) -> np.ndarray:
        """One PIL image -> float32 array in ``layout`` without the batch axis."""
        from PIL import Image

        img = img.convert("L" if self.channels == "L" else "RGB")
        if self.resize is not None:
            if len(self.resize) == 1:
                s = self.resize[0]
                w, h = img.size
                size = (s, max(1, round(h * s / w))) if w <= h else (max(1, round(w * s / h)), s)
            else:
                size = (self.resize[1], self.resize[0])
            img = img.resize(size, Image.BILINEAR)
        if self.crop is not None:
            ch, cw = self.crop
            w, h = img.size
            if ch > h or cw > w:
                raise ImageDataError(f"crop {ch}x{cw} is larger than the resized image {h}x{w}; resize first")
            left, top = int(round((w - cw) / 2.0)), int(round((h - ch) / 2.0))
            img = img.crop((left, top, left + cw, top + ch))
        a = np.asarray(img, dtype=np.float32)
        if a.ndim == 2:
            a = a[:, :, None]
        if self.channels == "BGR":
            a = a[:, :, ::-1]
        a = (a * np.float32(self.scale) - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return np.ascontiguousarray(a.transpose(2, 0, 1) if self.layout == "NCHW" else a, dtype=np.float32)


PRESETS = {
    "imagenet": Preprocess(resize=(256,), crop=(224, 224), mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)),
    "none": Preprocess(),
}


def preprocess_from_args(preset: str | None = None, resize=None, crop=None, mean=None, std=None, scale=None,
                         channels=None, layout=None) -> Preprocess:
    """A preset with explicit overrides (the CLI's ``--preprocess`` and ``--resize`` ...)."""
    if preset is not None and preset not in PRESETS:
        raise ImageDataError(f"--preprocess {preset!r}: expected one of {sorted(PRESETS)}")
    base = PRESETS[preset or "none"]
    over = {k: v for k, v in dict(resize=resize, crop=crop, mean=mean, std=std, scale=scale, channels=channels,
                                  layout=layout).items() if v is not None}
    fields = {**base.__dict__, **over}
    for k in ("resize", "crop", "mean", "std"):
        if fields[k] is not None:
            fields[k] = tuple(fields[k])
    if fields["crop"] is not None and len(fields["crop"]) == 1:
        fields["crop"] = (fields["crop"][0], fields["crop"][0])
    return Preprocess(**fields)


def _read_labels_file(path: Path) -> list[str]:
    try:
        lines = [ln.strip() for ln in path.read_text().splitlines()]
    except OSError as e:
        raise ImageDataError(f"labels file {path}: {e}") from None
    names = [ln for ln in lines if ln]
    if not names:
        raise ImageDataError(f"labels file {path} is empty; give one class name per line in class-index order")
    return names


def _class_index(folder: str, names: list[str], labels_file: Path) -> int:
    for i, line in enumerate(names):
        if line == folder or line.split()[0] == folder or line.split(",")[0].strip() == folder:
            return i
    raise ImageDataError(f"sub-folder {folder!r} is not a class of labels file {labels_file} (one class per "
                         "line, the folder name as the line or its first word)")


class _LazyInputs:
    """Array-like over the folder: ``len()``, ``shape``, ``dtype``; slicing decodes that chunk only."""

    def __init__(self, folder: "ImageFolder"):
        self.folder = folder

    def __len__(self) -> int:
        return len(self.folder.files)

    @property
    def shape(self) -> tuple:
        return (len(self),) + self.folder.sample_shape

    dtype = np.dtype(np.float32)
    ndim = property(lambda self: len(self.shape))

    def __getitem__(self, idx):
        if isinstance(idx, (int, np.integer)):
            return self.folder.load(self.folder.files[idx])
        if isinstance(idx, slice):
            files = self.folder.files[idx]
            if not files:
                return np.zeros((0,) + self.folder.sample_shape, np.float32)
            return np.stack([self.folder.load(f) for f in files])
        raise TypeError(f"image folder inputs take an int or a slice, not {type(idx).__name__}")

    def __array__(self, dtype=None, copy=None):
        a = self[0:len(self)]
        return a if dtype is None else a.astype(dtype)


@dataclass
class ImageFolder:
    """The images of ``root`` (recursively) with ``preprocess``; ``limit``: the first N (sorted paths)."""

    root: Path
    preprocess: Preprocess
    labels_file: Path | None = None
    limit: int | None = None
    progress: bool = True
    files: list = field(default_factory=list)
    labels: np.ndarray | None = None
    classes: list = field(default_factory=list)
    skipped: list = field(default_factory=list)     # (path, reason) of files Pillow could not decode
    sample_shape: tuple = ()

    def __post_init__(self):
        from PIL import Image
        from tqdm.auto import tqdm

        self.root = Path(self.root)
        if not self.root.is_dir():
            raise ImageDataError(f"image folder {self.root} does not exist or is not a directory")
        candidates = sorted(p for p in self.root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not candidates:
            raise ImageDataError(f"image folder {self.root} has no images ({', '.join(IMAGE_SUFFIXES)})")
        parts = [p.relative_to(self.root).parts[:-1] for p in candidates]
        labelled = all(parts)
        if not labelled and any(parts):
            raise ImageDataError(f"image folder {self.root} mixes images at its top level with images in "
                                 "sub-folders: put every image in a class folder (labels) or all at the top")
        good = []
        shape = None
        for p in tqdm(candidates, desc=f"scan {self.root.name}", unit="img", disable=not self.progress):
            if self.limit is not None and len(good) >= self.limit:
                break
            try:
                with Image.open(p) as img:
                    a = self.preprocess(img)
            except ImageDataError:
                raise
            except Exception as e:      # truncated, corrupt or not an image: listed and skipped
                self.skipped.append((str(p), f"{type(e).__name__}: {e}"))
                continue
            if shape is None:
                shape = a.shape
            elif a.shape != shape:
                raise ImageDataError(f"{p} preprocesses to {a.shape}, others to {shape}: give --resize and/or "
                                     "--crop so every image has the same size")
            good.append(p)
        if not good:
            raise ImageDataError(f"no image in {self.root} could be decoded ({len(self.skipped)} skipped, first: "
                                 f"{self.skipped[0][0]}: {self.skipped[0][1]})")
        self.files, self.sample_shape = good, shape
        if labelled:
            folders = [p.relative_to(self.root).parts[0] for p in good]
            if self.labels_file is not None:
                names = _read_labels_file(Path(self.labels_file))
                self.classes = names
                self.labels = np.asarray([_class_index(f, names, self.labels_file) for f in folders], np.int64)
            else:
                self.classes = sorted({q[0] for q in parts})
                index = {c: i for i, c in enumerate(self.classes)}
                self.labels = np.asarray([index[f] for f in folders], np.int64)
        elif self.labels_file is not None:
            raise ImageDataError(f"labels file {self.labels_file} given but the images of {self.root} are not in "
                                 "class sub-folders")
        self.inputs = _LazyInputs(self)

    def load(self, path) -> np.ndarray:
        from PIL import Image

        with Image.open(path) as img:
            return self.preprocess(img)

    @property
    def source(self) -> str:
        skipped = f", {len(self.skipped)} unreadable files skipped" if self.skipped else ""
        lab = f", {len(self.classes)} classes from sub-folders" if self.labels is not None else ", no labels"
        return f"image folder {self.root}: {len(self.files)} images{lab}{skipped}"
