"""Batch-1 latency of tvm-fxp's integer builds against onnxruntime int8 and fp32, accuracy beside every time.

    .venv/bin/python bench/latency.py [--models ...] [--repeats 11] [--threads 1] [--out bench/results/latency.json]

Models: the two reference models (``examples/models/fmnist_{vgg,resnet}.onnx``, Fashion-MNIST 28x28; a missing
file is skipped with a note) and, at 224x224, ResNet-50, SqueezeNet 1.1 and MobileNetV2 as published
(``bench/models224.py``: generated, random weights).  Engines, all in this one process, ``--threads`` threads
(default 1; a second run with 2 threads on ResNet-50 is added as ``two_threads`` unless ``--no-two-threads``):

* ``ort_fp32``: onnxruntime on the float model (CPU provider, ``ORT_ENABLE_ALL``);
* ``ort_int8``: onnxruntime static QDQ int8, **per-channel** weights (uint8 activations, MinMax calibration,
  after onnxruntime's own ``quant_pre_process``): the strongest onnxruntime int8 baseline;
  ``ort_int8_per_tensor``: the same with per-tensor weights;
* ``tvm_fxp_u8``: the uniform 8-bit plan (``Uniform(8)``), realized and built with ``tvm_fxp.build`` (the
  default build: no tuning);
* ``tvm_fxp_best`` (reference models): the most accurate of the methods' plans
  (``bench/results/plans/{model}_*.json``, written by ``bench/methods.py``) whose top-1 is within 1 point of
  the float model's, built the same way (none when no plan qualifies).

``ratio_vs_ort_int8`` per model is ``tvm_fxp_u8`` over ``ort_int8`` (per-channel); ``ratios`` has every
other pair.  Accuracy: top-1 on ``--eval-images`` Fashion-MNIST test images for the reference models; for the
224 models (random weights, no labels) the top-1 agreement with onnxruntime fp32 on ``--agreement-images``
synthetic images.  Every timed tvm-fxp build is checked bit-exact against the simulated graph in this run
(``bit_exact``).

Timing: every engine is timed by the same Python loop (``time.perf_counter`` around ``InferenceSession.run``
and around the VM's ``main``, each given the numpy input and returning numpy outputs; ours as ``tvm_fxp.Runner`` calls it:
the input copied into a staged aligned tensor, the outputs shared through DLPack), warmed up, ``--repeats`` repeats of about
``--repeat-seconds`` each, interleaved round-robin with a rotating order; medians in milliseconds.
Rerunning this script is all it takes to refresh ``bench/results/latency.json`` (and then
``bench/update_readme.py``) after the plans or the reference models change.
"""

from __future__ import annotations

import os
import sys


def _threads_from_argv(argv) -> int:
    for i, a in enumerate(argv):
        if a == "--threads" and i + 1 < len(argv):
            return int(argv[i + 1])
        if a.startswith("--threads="):
            return int(a.split("=", 1)[1])
    return 1


THREADS = _threads_from_argv(sys.argv)
# Thread counts must be fixed before tvm / onnxruntime / numpy are imported.
os.environ["TVM_NUM_THREADS"] = str(THREADS)
for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from collections import Counter  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
import tvm  # noqa: E402
from tvm import relax  # noqa: E402

import tvm_fxp  # noqa: E402
import tvm_fxp.schedules  # noqa: E402
from tvm_fxp.runtime import Staging, to_numpy  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from models224 import MODELS as MODELS_224, images as images_224, write_model  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
REFERENCE = {
    "fmnist_vgg": REPO / "examples" / "models" / "fmnist_vgg.onnx",
    "fmnist_resnet": REPO / "examples" / "models" / "fmnist_resnet.onnx",
}
ALL_MODELS = list(REFERENCE) + list(MODELS_224)
INPUT_NAME = "input"
N_ORT_CALIB = 100          # reference models: Fashion-MNIST training images for onnxruntime's calibration
N_TVM_CALIB = 256          # ... and for ours
N_CALIB_224 = 4            # 224 models: synthetic images (ORT and ours)
GOALS = {"reference": {"ratio_vs_ort_int8": 0.8, "ratio_vs_ort_fp32": 0.4}, "224": {"ratio_vs_ort_int8": 1.0},
         "224_moonshot": {"ratio_vs_ort_int8": 0.8}}


# --------------------------------------------------------------------------- machine info

def machine_info() -> dict:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = None
    return {"cpu": cpu, "cores": os.cpu_count(), "cores_available": affinity, "threads_used": 1,
            "platform": platform.platform(), "python": platform.python_version()}


def loadavg() -> list | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def tvm_target_features() -> dict:
    """Which SIMD features LLVM may use for the default ``llvm`` target vs. the host CPU (informative)."""
    try:
        from tvm.target import codegen

        keys = ["sse4.2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vnni", "avxvnni"]
        host = str(codegen.llvm_get_system_cpu())
        out = {"host_cpu": host}
        for label, t in (("default_llvm", tvm.target.Target("llvm")),
                         ("host_mcpu", tvm.target.Target({"kind": "llvm", "mcpu": host}))):
            f = {str(x) for x in codegen.llvm_get_cpu_features(t)}
            out[label] = [k for k in keys if k in f]
        return out
    except Exception as e:  # noqa: BLE001 -- informative only
        return {"error": f"{type(e).__name__}: {e}"}


# --------------------------------------------------------------------------- engines

def ort_session(path, optimized_path=None) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if optimized_path is not None:
        so.optimized_model_filepath = str(optimized_path)
    return ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])


class _Reader:
    """onnxruntime CalibrationDataReader feeding images one at a time (batch 1)."""

    def __init__(self, images: np.ndarray):
        self._it = iter([{INPUT_NAME: np.ascontiguousarray(images[i:i + 1])} for i in range(len(images))])

    def get_next(self):
        return next(self._it, None)

    def rewind(self):  # not needed for MinMax, provided for API completeness
        pass


def make_ort_int8(model_path: Path, tmp: Path, calib: np.ndarray, per_channel: bool = True) -> tuple[Path, dict]:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(_Reader, CalibrationDataReader):
        pass

    info = {"quant_format": "QDQ", "activation_type": "QUInt8", "weight_type": "QInt8", "per_channel": per_channel,
            "calibrate_method": "MinMax", "calibration_images": int(len(calib))}
    src = model_path
    pre = tmp / f"{model_path.stem}.pre.onnx"
    try:
        quant_pre_process(str(model_path), str(pre))
        src = pre
        info["pre_processed"] = True
    except Exception as e:  # noqa: BLE001 -- optional step
        info["pre_processed"] = False
        info["pre_process_error"] = f"{type(e).__name__}: {e}"
        print(f"  note: quant_pre_process failed ({type(e).__name__}: {e}); quantizing the raw model")
    out = tmp / f"{model_path.stem}.int8{'pc' if per_channel else 'pt'}.onnx"
    # Reader must subclass CalibrationDataReader (quantize_static checks isinstance in some versions).
    quantize_static(str(src), str(out), Reader(calib), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=per_channel)
    return out, info


def optimized_op_counts(path: Path) -> dict:
    import onnx

    m = onnx.load(str(path))
    return dict(sorted(Counter(n.op_type for n in m.graph.node).items()))


def _le(v, bound):
    return None if v is None else bool(v <= bound)


def accumulator_dtypes(mod) -> dict:
    """``{dtype: count}`` of the conv2d/matmul accumulators (``out_dtype``) in a realized module."""
    from tvm_fxp.passes.relax_utils import main_bindings, op_name

    counts: dict = {}
    for b in main_bindings(mod["main"]):
        if op_name(b.value) in ("relax.nn.conv2d", "relax.matmul"):
            dt = str(b.value.attrs.out_dtype)
            counts[dt] = counts.get(dt, 0) + 1
    return counts


# --------------------------------------------------------------------------- engines (one timing loop for all)

class OrtEngine:
    """onnxruntime on one model (a path, or an ``InferenceSession`` as ``bench/tune.py`` passes)."""

    def __init__(self, path, threads: int = 1):
        if isinstance(path, ort.InferenceSession):
            self.sess, self.out = path, [path.get_outputs()[0].name]
            return
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.sess = ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])
        self.out = [self.sess.get_outputs()[0].name]

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.concatenate([self.sess.run(self.out, {INPUT_NAME: x[i:i + 1]})[0] for i in range(len(x))])

    def loop(self, x1: np.ndarray, number: int) -> float:
        run, outs, feed = self.sess.run, self.out, {INPUT_NAME: x1}
        t0 = time.perf_counter()
        for _ in range(number):
            run(outs, feed)
        return (time.perf_counter() - t0) / number

    time_repeat = loop


class TvmEngine:
    """A built module in the Relax VM, called as ``tvm_fxp.Runner`` calls it: the numpy input copied into a
    staged aligned tensor (``tvm_fxp.runtime.Staging``), the result taken back as numpy (``x1``: unused, kept
    for ``bench/tune.py``'s calls)."""

    def __init__(self, ex, x1=None):
        self.dev = tvm.cpu()
        self.vm = relax.VirtualMachine(ex, self.dev)
        self.stage = Staging(self.dev)

    def predict(self, x: np.ndarray) -> np.ndarray:
        f = self.vm["main"]
        return np.concatenate([to_numpy(f(self.stage(x[i:i + 1]))) for i in range(len(x))])

    def loop(self, x1: np.ndarray, number: int) -> float:
        f, stage = self.vm["main"], self.stage
        t0 = time.perf_counter()
        for _ in range(number):
            to_numpy(f(stage(x1)))
        return (time.perf_counter() - t0) / number

    time_repeat = loop


def time_engines(engines: dict, x1: np.ndarray, repeats: int, repeat_seconds: float) -> tuple[dict, dict]:
    """Median seconds per call of each engine: warm-up, ``number`` sized to ~``repeat_seconds`` per repeat,
    repeats interleaved round-robin with a rotating order."""
    numbers = {}
    for k, e in engines.items():
        e.loop(x1, 3)
        t = e.loop(x1, 5)
        numbers[k] = max(1, min(200, int(math.ceil(repeat_seconds / max(t, 1e-7)))))
    samples = {k: [] for k in engines}
    order = list(engines)
    for r in range(repeats):
        for k in order[r % len(order):] + order[:r % len(order)]:
            samples[k].append(engines[k].loop(x1, numbers[k]))
    return {k: statistics.median(v) for k, v in samples.items()}, {"numbers": numbers, "samples_ms": {
        k: [round(s * 1e3, 4) for s in v] for k, v in samples.items()}}


# --------------------------------------------------------------------------- plans and builds

def realized_build(q) -> tuple:
    """The default realized module, built with ``tvm_fxp.build`` (the default schedules, no tuning)."""
    real = q.realized()
    return real, tvm_fxp.build(real)


def bit_exact(q, ex, x: np.ndarray) -> bool:
    """The built integer module's outputs equal the simulated graph's, bit for bit, on ``x``."""
    sim = tvm_fxp.Runner(tvm_fxp.build(q.simulated()), batch=q.batch).run(x, batch_size=len(x))
    real = tvm_fxp.Runner(ex, batch=q.batch).run(x, batch_size=len(x))
    return bool(np.array_equal(sim, real))


def best_plan(name: str, prepared, lg, test, float_top1: float, plans_dir: Path) -> tuple:
    """The most accurate plan file within 1 point of float top-1: ``(q, build, info)`` or ``(None, None, info)``."""
    from tvm_fxp.plan import Plan

    tried, best = {}, None
    for f in sorted(Path(plans_dir).glob(f"{name}_*.json")):
        try:
            q = tvm_fxp.bind_plan(prepared, lg, Plan.load(f))
            _, ex = realized_build(q)
            top1 = float(np.mean(tvm_fxp.Runner(ex, batch=q.batch).run(test.inputs).argmax(1) == test.labels))
        except Exception as e:  # noqa: BLE001 -- a stale plan file is reported, not fatal
            tried[f.name] = f"failed: {type(e).__name__}: {e}"
            continue
        tried[f.name] = top1
        if top1 >= float_top1 - 0.01 and (best is None or top1 > best[0]):
            best = (top1, f, q, ex)
    info = {"candidates_top1": tried, "rule": "most accurate plan file with top-1 >= float top-1 - 0.01"}
    if best is None:
        return None, None, info
    top1, f, q, ex = best
    bits = sorted({fmt.bits for fmt in q.plan.tensors.values()})
    info.update({"file": str(f.relative_to(REPO) if f.is_relative_to(REPO) else f), "method": q.plan.method,
                 "bits_used": bits, "max_accumulator_bits": max(a.bound.bits for a in q.arithmetic.values())})
    return q, ex, info


# --------------------------------------------------------------------------- one model

def bench_model(name: str, args, tmp: Path, data) -> dict:
    from tvm_fxp.calibrate import calibrate
    from tvm_fxp.methods import uniform

    t_start = time.time()
    reference = name in REFERENCE
    path = REFERENCE[name] if reference else write_model(name, tmp)
    if reference:
        calib_ort, calib_tvm, evalx, labels = data["train"][:N_ORT_CALIB], data["train"][:N_TVM_CALIB], \
            data["test"].inputs, data["test"].labels
        exact_x = evalx[:64]
    else:
        calib = images_224(N_CALIB_224, seed=1)
        calib_ort, calib_tvm, evalx, labels = calib, calib[:2], images_224(args.agreement_images, seed=2), None
        exact_x = evalx[:1]
    x1 = np.ascontiguousarray(evalx[:1])
    r: dict = {"model": str(path.relative_to(REPO)) if path.is_relative_to(REPO) else f"bench/models224.py:{name}",
               "kind": "reference" if reference else "224", "threads": THREADS}
    engines = {"ort_fp32": OrtEngine(path, THREADS)}
    ort_info = {}
    for key, pc in (("ort_int8", True), ("ort_int8_per_tensor", False)):
        qpath, info = make_ort_int8(path, tmp, calib_ort, per_channel=pc)
        engines[key], ort_info[key] = OrtEngine(qpath, THREADS), info
    r["ort_int8_config"] = ort_info

    prepared, lg = tvm_fxp.load_model(path)
    stats = calibrate(prepared, lg, calib_tvm, batch_size=min(len(calib_tvm), 64), progress=False)
    q8 = tvm_fxp.bind_plan(prepared, lg, uniform.allocate(lg, stats, tvm_fxp.Uniform(8)))
    t0 = time.time()
    real8, ex8 = realized_build(q8)
    r["build_seconds"] = round(time.time() - t0, 1)
    r["tvm_fxp_kernels"] = tvm_fxp.schedules.dispatched_kernels(real8, tvm_fxp.api.host_target())
    engines["tvm_fxp_u8"] = TvmEngine(ex8)
    checks = {"tvm_fxp_u8": (q8, ex8)}
    if args.nchw:     # the same plan with NCHW between all layers (no BlockLayout), timed in the same run
        from tvm_fxp.schedules import cpu_pipeline

        ex_nchw = cpu_pipeline.build(real8, tvm_fxp.api.host_target(), blocked=False)
        engines["tvm_fxp_u8_nchw"] = TvmEngine(ex_nchw)
        checks["tvm_fxp_u8_nchw"] = (q8, ex_nchw)
    plans = {"tvm_fxp_u8": {"plan": "Uniform(8)", "calibration_images": int(len(calib_tvm))}}
    accuracy: dict = {}
    if reference:
        float_top1 = float(np.mean(engines["ort_fp32"].predict(evalx).argmax(1) == labels))
        qb, exb, info = best_plan(name, prepared, lg, data["test"], float_top1, args.plans)
        plans["tvm_fxp_best"] = info
        if qb is not None:
            engines["tvm_fxp_best"] = TvmEngine(exb)
            checks["tvm_fxp_best"] = (qb, exb)
    r["plans"] = plans
    r["bit_exact"] = {k: bit_exact(q, ex, exact_x) for k, (q, ex) in checks.items()}
    r["bit_exact_images"] = int(len(exact_x))

    preds = {k: e.predict(evalx).argmax(1) for k, e in engines.items()}
    if reference:
        r["top1"] = {k: float(np.mean(p == labels)) for k, p in preds.items()}
        r["eval_images"] = int(len(evalx))
    r["agreement_with_ort_fp32"] = {k: float(np.mean(p == preds["ort_fp32"])) for k, p in preds.items()}
    r["agreement_images"] = int(len(evalx))

    print(f"  timing {len(engines)} engines x {args.repeats} repeats ...", flush=True)
    med, detail = time_engines(engines, x1, args.repeats, args.repeat_seconds)
    r["median_ms"] = {k: v * 1e3 for k, v in med.items()}
    r["loadavg_after_timing"] = loadavg()
    # the kernels' share of our time: every kernel call of one inference timed on its own (warm caches); the
    # reference models' builds make one call (schedules/graph.py), so theirs is the whole graph's kernel
    r["kernel_sum_ms"] = {k: round(sum(row["ms"] for row in tvm_fxp.runtime.profile(checks[k][1], x1, 5)), 4)
                          for k in checks}
    r["timing"] = detail

    def ratio(a, b):
        return med[a] / med[b] if a in med and b in med else None

    r["ratio_vs_ort_int8"] = ratio("tvm_fxp_u8", "ort_int8")
    r["ratios"] = {f"{a}/{b}": ratio(a, b) for a in ("tvm_fxp_u8", "tvm_fxp_best", "tvm_fxp_u8_nchw") for b in
                   ("ort_int8", "ort_int8_per_tensor", "ort_fp32") if a in med}
    r["wall_seconds"] = round(time.time() - t_start, 1)
    print_table(name, r)
    return r


def print_table(name: str, r: dict) -> None:
    acc = r.get("top1") or r["agreement_with_ort_fp32"]
    label = "top-1" if r.get("top1") else "agree/fp32"
    print(f"\n== {name}: batch 1, {r['threads']} thread(s), medians ==")
    for k, ms in r["median_ms"].items():
        print(f"  {k:<22} {ms:9.3f} ms   {label} {acc.get(k, float('nan')):.4f}")
    print(f"  ratio_vs_ort_int8 (u8 / per-channel int8) = {r['ratio_vs_ort_int8']:.3f}; bit-exact: {r['bit_exact']}",
          flush=True)


def two_thread_row(args) -> dict:
    """The same bench with 2 threads (a fresh process: thread pools are sized at import) on ResNet-50."""
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "two.json"
        cmd = [sys.executable, __file__, "--threads", "2", "--models", "resnet50_224", "--no-two-threads",
               "--repeats", str(args.repeats), "--repeat-seconds", str(args.repeat_seconds), "--out", str(out)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0 or not out.exists():
            return {"error": (proc.stderr or proc.stdout)[-2000:]}
        return json.loads(out.read_text())["models"]


# --------------------------------------------------------------------------- main

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=ALL_MODELS, help=f"of {', '.join(ALL_MODELS)}")
    ap.add_argument("--repeats", type=int, default=11)
    ap.add_argument("--repeat-seconds", type=float, default=0.2)
    ap.add_argument("--threads", type=int, default=1, help="threads of every engine (read before the imports)")
    ap.add_argument("--no-two-threads", action="store_true", help="skip the 2-thread ResNet-50 row")
    ap.add_argument("--nchw", action="store_true",
                    help="also time the uniform plan built with NCHW between all layers (tvm_fxp_u8_nchw: the "
                         "build without schedules/layout.py's BlockLayout), for a before/after in one run")
    ap.add_argument("--eval-images", type=int, default=1000, help="reference models: test images for top-1")
    ap.add_argument("--agreement-images", type=int, default=16, help="224 models: synthetic images for agreement")
    ap.add_argument("--plans", type=Path, default=REPO / "bench" / "results" / "plans")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "latency.json")
    args = ap.parse_args(argv)
    unknown = [m for m in args.models if m not in ALL_MODELS]
    if unknown:
        ap.error(f"unknown model(s) {', '.join(unknown)}; known: {', '.join(ALL_MODELS)}")
    ort.set_default_logger_severity(3)
    t0 = time.time()
    data = {}
    if any(m in REFERENCE for m in args.models):
        from tvm_fxp.datasets import fashion_mnist

        data = {"train": fashion_mnist("train", limit=max(N_ORT_CALIB, N_TVM_CALIB)).inputs,
                "test": fashion_mnist("test", limit=args.eval_images)}
    out = {"machine": machine_info(), "tvm_version": tvm.__version__, "onnxruntime_version": ort.__version__,
           "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "config": {"batch": 1, "threads": THREADS, "repeats": args.repeats, "repeat_seconds": args.repeat_seconds,
                      "timer": "time.perf_counter loop over InferenceSession.run / VirtualMachine main, numpy "
                               "input and numpy output each call (ours as tvm_fxp.Runner: the input copied into a "
                               "staged aligned tensor, outputs through DLPack), interleaved round-robin, median",
                      "tvm_target": str(tvm_fxp.api.host_target()), "tvm_target_features": tvm_target_features(),
                      "goals": GOALS},
           "models": {}, "skipped": {}}
    out["machine"]["threads_used"] = THREADS
    out["loadavg_at_start"] = loadavg()
    with tempfile.TemporaryDirectory(prefix="tvmfxp-latency-") as td:
        for name in args.models:
            print(f"\n[{name}]", flush=True)
            if name in REFERENCE and not REFERENCE[name].is_file():
                out["skipped"][name] = f"file not found: {REFERENCE[name]}"
                continue
            try:
                out["models"][name] = bench_model(name, args, Path(td), data)
            except Exception as e:  # noqa: BLE001 -- keep the other models' results
                traceback.print_exc()
                out["skipped"][name] = "failed: " + "".join(traceback.format_exception_only(type(e), e)).strip()
    if not args.no_two_threads and "resnet50_224" in args.models:
        print("\n[resnet50_224, 2 threads]", flush=True)
        out["two_threads"] = two_thread_row(args)
    out["wall_seconds"] = round(time.time() - t0, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(f"\nwrote {args.out} ({out['wall_seconds']:.0f} s)")
    return 0 if out["models"] and all(all(m["bit_exact"].values()) for m in out["models"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
