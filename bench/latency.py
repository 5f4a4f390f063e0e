"""Single-thread, batch-1 latency: tvm-fxp's integer models vs. TVM float vs. onnxruntime fp32 / int8.

For each reference model (``examples/models/fmnist_vgg.onnx``,
``examples/models/fmnist_resnet.onnx``; a missing file is skipped with a note)
this script measures, in one process and with ONE thread everywhere:

* ``ort_fp32``  -- onnxruntime on the float ONNX model (CPU provider,
  intra/inter-op threads = 1, ``ORT_ENABLE_ALL`` graph optimizations);
* ``ort_int8``  -- onnxruntime on a static QDQ int8 model made with
  ``onnxruntime.quantization.quantize_static`` (uint8 activations, int8
  weights, per-tensor, MinMax calibration over ~100 Fashion-MNIST training
  images fed one at a time; ``quant_pre_process`` first when it works);
* ``tvm_float`` -- the tvm-fxp *prepared* float Relax module compiled with
  ``tvm_fxp.build`` (target: the host CPU, ``llvm -mcpu=<host>``);
* ``tvm_fxp``   -- **our model**: the de Bruin 2020 plan with 16-bit accumulators
  (``bench/results/plans/{model}_debruin2020_untiled.json`` from ``bench/methods.py``: whole reductions in
  int16, one fused kernel per layer (the k-tiled plan's tiles are still separate kernel calls), or ``--plans
  DIR``; when absent, ``debruin2020 --max-tiles 0`` is run here with ``--search-seconds``), realized with int16
  accumulators
  (``realized(accumulator="narrow")``) and compiled with ``tvm_fxp.build``: the scheduled integer kernels
  of ``tvm_fxp.schedules`` with each layer's requantize epilogue fused in.  ``ratio_vs_ort_int8`` and
  ``ratio_vs_ort_fp32`` are this engine's median over ORT's;
* ``tvm_fxp_unfused`` -- the same realized module through TVM's CPU pipeline with our kernels but without
  our two passes (``tvm_fxp.schedules.pipeline(target, fuse=False)``): the epilogues run as
  separate, unscheduled TIR kernels (what ``tvm_fxp.build`` did before the epilogue fusion);
* ``tvm_fxp_int32_baseline`` -- the previous baseline: ``Uniform(bits=8)`` realized with int32 accumulators,
  compiled by ``tvm.compile``'s default pipeline with TVM's own legalization (inside
  ``tvm_fxp.schedules.disabled()``).

The plan's accuracy (top-1 and agreement with ORT fp32) is measured on ``--eval-images`` Fashion-MNIST test
images, and the fused and unfused builds are checked to give identical outputs (bit-exact).

Timing: each engine is warmed up, then ``--repeats`` repeats are taken, each
repeat averaging enough calls to last about ``--repeat-seconds``; the engines'
repeats are interleaved round-robin (with a rotating order) so that machine
noise hits all of them alike, and the median over repeats is reported in
milliseconds per inference.  TVM is timed with the VM's C++
``time_evaluator`` (the primary number); onnxruntime is timed with a Python
``time.perf_counter`` loop around ``InferenceSession.run``.  Because the ORT
numbers therefore include Python call overhead, TVM is also timed with the same
kind of Python loop (``vm["main"](x)``) and reported separately as
``median_ms_python_loop`` so either comparison can be made.

Usage::

    .venv/bin/python bench/latency.py [--repeats 11] [--models vgg resnet] [--plans DIR]
                                      [--out bench/results/latency.json]
"""

from __future__ import annotations

import os

# One thread everywhere -- must happen before tvm / onnxruntime / numpy are imported.
os.environ["TVM_NUM_THREADS"] = "1"
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
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
from tvm_fxp.datasets import fashion_mnist  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
MODELS = {
    "fmnist_vgg": REPO / "examples" / "models" / "fmnist_vgg.onnx",
    "fmnist_resnet": REPO / "examples" / "models" / "fmnist_resnet.onnx",
}
ENGINES = ("ort_fp32", "ort_int8", "tvm_float", "tvm_fxp", "tvm_fxp_unfused", "tvm_fxp_int32_baseline")
TVM_ENGINES = ("tvm_float", "tvm_fxp", "tvm_fxp_unfused", "tvm_fxp_int32_baseline")
INPUT_NAME = "input"
N_ORT_CALIB = 100
N_TVM_CALIB = 256
N_SEARCH = 512
NOTES = ("tvm_fxp: de Bruin 2020 int16-accumulator plan, tvm_fxp.build (fused integer kernels, untuned); "
         "targets (issue 5): ratio_vs_ort_int8 <= 1.0 and ratio_vs_ort_fp32 <= 0.5 per model")


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


def make_ort_int8(model_path: Path, tmp: Path, calib: np.ndarray) -> tuple[Path, dict]:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(_Reader, CalibrationDataReader):
        pass

    info = {"quant_format": "QDQ", "activation_type": "QUInt8", "weight_type": "QInt8", "per_channel": False,
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
    out = tmp / f"{model_path.stem}.int8.onnx"
    # Reader must subclass CalibrationDataReader (quantize_static checks isinstance in some versions).
    quantize_static(str(src), str(out), Reader(calib), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=False)
    return out, info


def optimized_op_counts(path: Path) -> dict:
    import onnx

    m = onnx.load(str(path))
    return dict(sorted(Counter(n.op_type for n in m.graph.node).items()))


class OrtEngine:
    def __init__(self, sess: ort.InferenceSession):
        self.sess = sess
        self.out_name = sess.get_outputs()[0].name

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.sess.run([self.out_name], {INPUT_NAME: x})[0]

    def time_repeat(self, x: np.ndarray, number: int) -> float:
        run, outs, feed = self.sess.run, [self.out_name], {INPUT_NAME: x}
        t0 = time.perf_counter()
        for _ in range(number):
            run(outs, feed)
        return (time.perf_counter() - t0) / number


class TvmEngine:
    def __init__(self, ex, x1: np.ndarray):
        self.dev = tvm.cpu()
        self.vm = relax.VirtualMachine(ex, self.dev)
        self.x1 = tvm.runtime.tensor(np.ascontiguousarray(x1), self.dev)
        self._evaluators = {}

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.vm["main"](tvm.runtime.tensor(np.ascontiguousarray(x), self.dev)).numpy()

    def time_repeat(self, x: np.ndarray, number: int) -> float:
        """One repeat with the VM's C++ time_evaluator (seconds per call); x is the preloaded batch-1 input."""
        ev = self._evaluators.get(number)
        if ev is None:
            ev = self._evaluators[number] = self.vm.time_evaluator("main", self.dev, number=number, repeat=1)
        return float(ev(self.x1).results[0])

    def time_repeat_python(self, x: np.ndarray, number: int) -> float:
        f, arg = self.vm["main"], self.x1
        t0 = time.perf_counter()
        for _ in range(number):
            f(arg)
        return (time.perf_counter() - t0) / number


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


def uniform_plan(lg, prepared, train):
    from tvm_fxp.calibrate import calibrate
    from tvm_fxp.methods import uniform

    stats = calibrate(prepared, lg, train[:N_TVM_CALIB], progress=False)
    return uniform.allocate(lg, stats, tvm_fxp.Uniform(bits=8))


def debruin_plan(name, path, prepared, lg, train, args):
    """The de Bruin 2020 (16-bit accumulator) plan: ``--plans/{name}_debruin2020_untiled.json`` if it exists, else
    searched here (``--search-seconds``, same data split as ``bench/methods.py``)."""
    from tvm_fxp.plan import Plan

    f = Path(args.plans) / f"{name}_debruin2020_untiled.json"
    if f.is_file():
        plan = Plan.load(f)
        q = tvm_fxp.bind_plan(prepared, lg, plan)
        import hashlib

        info = {"source": f"file {f}", "sha256": hashlib.sha256(f.read_bytes()).hexdigest(),
                "method": plan.method if hasattr(plan, "method") else "debruin2020"}
    else:
        from tvm_fxp.calibrate import calibrate
        from tvm_fxp.datasets import fashion_mnist
        from tvm_fxp.methods import get_method
        from tvm_fxp.methods.debruin2020 import DeBruin2020

        print(f"  note: {f} not found; running debruin2020 here ({args.search_seconds:.0f} s limit)", flush=True)
        data = fashion_mnist("train", limit=500 + N_SEARCH)
        stats = calibrate(prepared, lg, data.inputs[:500], progress=False)
        ev = tvm_fxp.api.make_evaluator(prepared, lg, stats, data.inputs[500:], data.labels[500:],
                                        args.search_seconds, progress=False)
        plan = get_method("debruin2020").allocate(lg, stats, DeBruin2020(acc_bits=16, max_tiles=0), ev)
        q = tvm_fxp.bind_plan(prepared, lg, plan, stats)
        info = {"source": f"debruin2020 searched in this run (acc_bits=16, max_tiles=0, proof=l1, time limit "
                          f"{args.search_seconds:.0f} s, calibration train[:500], search train[500:{500 + N_SEARCH}])",
                "evaluations": ev.evaluations, "timed_out": bool(ev.out_of_time())}
    info["bits"] = {k: fmt.bits for k, fmt in plan.tensors.items()}
    info["max_accumulator_bits"] = max(a.bound.bits for a in q.arithmetic.values())
    return q, info


# --------------------------------------------------------------------------- one model

def bench_model(name: str, path: Path, args, train: np.ndarray, test, tmp: Path) -> dict:
    t_start = time.time()
    x1 = np.ascontiguousarray(test.inputs[:1])
    result: dict = {"model_path": str(path.relative_to(REPO) if path.is_relative_to(REPO) else path)}

    print(f"  building ort_fp32 ...", flush=True)
    engines: dict = {"ort_fp32": OrtEngine(ort_session(path))}

    print(f"  quantizing with onnxruntime (static QDQ int8) ...", flush=True)
    int8_path, int8_info = make_ort_int8(path, tmp, train[:N_ORT_CALIB])
    engines["ort_int8"] = OrtEngine(ort_session(int8_path))
    try:  # a throwaway session dumps the optimized graph, to show which (integer) kernels ORT really runs
        opt_path = tmp / f"{path.stem}.int8.optimized.onnx"
        ort_session(int8_path, optimized_path=opt_path)
        int8_info["optimized_graph_ops"] = optimized_op_counts(opt_path)
    except Exception as e:  # noqa: BLE001 -- informative only
        int8_info["optimized_graph_ops"] = f"unavailable: {type(e).__name__}: {e}"
    result["ort_int8_config"] = int8_info

    errors = {}
    print(f"  tvm_fxp: loading/choosing the de Bruin int16 plan ...", flush=True)
    t0 = time.time()
    prepared, lg = tvm_fxp.load_model(path)
    t_load = time.time() - t0
    t0 = time.time()
    q, plan_info = debruin_plan(name, path, prepared, lg, train, args)
    t_plan = time.time() - t0
    result["plan"] = plan_info
    target = tvm_fxp.api.host_target()
    t0 = time.time()
    narrow = q.realized(accumulator="narrow")
    result["tvm_fxp_accumulators"] = accumulator_dtypes(narrow)
    result["tvm_fxp_kernels"] = tvm_fxp.schedules.dispatched_kernels(narrow, target)
    fused = tvm_fxp.build(narrow)
    t_fused = time.time() - t0
    engines["tvm_fxp"] = TvmEngine(fused, x1)
    t0 = time.time()
    unfused = tvm.compile(narrow, target=target, relax_pipeline=tvm_fxp.schedules.pipeline(
        target, fuse=False))
    engines["tvm_fxp_unfused"] = TvmEngine(unfused, x1)
    t_unfused = time.time() - t0
    t0 = time.time()
    engines["tvm_float"] = TvmEngine(tvm_fxp.build(q.prepared), x1)
    t_bf = time.time() - t0
    print(f"  tvm_fxp_int32_baseline: Uniform 8-bit, int32 accumulators, TVM's own pipeline ...", flush=True)
    t0 = time.time()
    try:
        q8 = q.with_plan(uniform_plan(lg, prepared, train))
        with tvm_fxp.schedules.disabled():  # the old baseline keeps TVM's own conv2d/matmul legalization
            engines["tvm_fxp_int32_baseline"] = TvmEngine(tvm_fxp.build(q8.realized("wide")), x1)
    except Exception as e:  # noqa: BLE001
        errors["tvm_fxp_int32_baseline"] = "failed: " + "".join(traceback.format_exception_only(type(e), e)).strip()
    t_base = time.time() - t0
    result["tvm_setup_seconds"] = {"load_model": round(t_load, 2), "plan": round(t_plan, 2),
                                   "realize_and_build_fxp": round(t_fused, 2),
                                   "build_fxp_unfused": round(t_unfused, 2), "build_float": round(t_bf, 2),
                                   "quantize_and_build_int32_baseline": round(t_base, 2)}
    result["tvm_calibration_images"] = N_TVM_CALIB

    # ---- correctness: top-1 agreement with ORT fp32 on the first --eval-images test images
    preds, logits = {}, {}
    for k, eng in list(engines.items()):
        try:
            y = np.asarray(eng.predict(np.ascontiguousarray(test.inputs)))
            logits[k] = y
            preds[k] = y.argmax(axis=1)
        except Exception as e:  # noqa: BLE001
            errors[k] = "run failed: " + "".join(traceback.format_exception_only(type(e), e)).strip()
            del engines[k]
    # batch-1 smoke run (the timed configuration) must also work
    for k, eng in list(engines.items()):
        try:
            eng.predict(x1)
        except Exception as e:  # noqa: BLE001
            errors[k] = "batch-1 run failed: " + "".join(traceback.format_exception_only(type(e), e)).strip()
            del engines[k]
    ref = preds.get("ort_fp32")
    agreement = {k: float(np.mean(p == ref)) for k, p in preds.items()} if ref is not None else {}
    result["agreement_with_ort_fp32"] = agreement
    result["agreement_images"] = int(len(test.inputs))
    if test.labels is not None:
        result["top1_accuracy"] = {k: float(np.mean(p == test.labels)) for k, p in preds.items()}
    if "ort_fp32" in logits:
        result["max_abs_logit_diff_vs_ort_fp32"] = {
            k: float(np.max(np.abs(v.astype(np.float64) - logits["ort_fp32"]))) for k, v in logits.items()}
    if "tvm_fxp" in logits and "tvm_fxp_unfused" in logits:   # the epilogue fusion changes no result
        b1 = all(np.array_equal(engines["tvm_fxp"].predict(test.inputs[i:i + 1]),
                                engines["tvm_fxp_unfused"].predict(test.inputs[i:i + 1])) for i in range(16))
        result["tvm_fxp_fused_equals_unfused"] = bool(np.array_equal(logits["tvm_fxp"], logits["tvm_fxp_unfused"])
                                                      and b1)
    if errors:
        result["errors"] = errors
        for k, msg in errors.items():
            print(f"  ERROR [{k}]: {msg}")

    # ---- timing
    # Timed "slots": the four engines (primary), plus the TVM engines again through a Python loop.
    slots = {k: (lambda n, e=e: e.time_repeat(x1, n)) for k, e in engines.items()}
    for k in TVM_ENGINES:
        if k in engines:
            slots[k + "@python_loop"] = (lambda n, e=engines[k]: e.time_repeat_python(x1, n))

    numbers = {}
    for k, f in slots.items():  # warm-up, then size `number` so that one repeat lasts ~repeat_seconds
        f(3)
        t = f(10)
        n = max(1, int(math.ceil(args.repeat_seconds / max(t, 1e-7))))
        f(min(n, 50))
        numbers[k] = n
    samples = {k: [] for k in slots}
    order = list(slots)
    print(f"  timing {len(slots)} slots x {args.repeats} repeats (round-robin) ...", flush=True)
    load_before = loadavg()
    for r in range(args.repeats):
        rot = order[r % len(order):] + order[:r % len(order)]
        for k in rot:
            samples[k].append(slots[k](numbers[k]))
    load_after = loadavg()

    med = {k: statistics.median(v) * 1e3 for k, v in samples.items()}
    result["median_ms"] = {k: med.get(k) for k in ENGINES}
    result["median_ms_python_loop"] = {k: med.get(k + "@python_loop") for k in TVM_ENGINES}
    result["samples_ms"] = {k: [round(s * 1e3, 5) for s in v] for k, v in samples.items()}
    result["calls_per_repeat"] = numbers
    result["repeats"] = args.repeats
    result["loadavg_before_after_timing"] = [load_before, load_after]

    def ratio(a, b):
        return med[a] / med[b] if a in med and b in med else None

    result["ratio_vs_ort_fp32"] = ratio("tvm_fxp", "ort_fp32")
    result["ratio_vs_ort_int8"] = ratio("tvm_fxp", "ort_int8")
    result["targets_met"] = {"ratio_vs_ort_int8 <= 1.0": _le(result["ratio_vs_ort_int8"], 1.0),
                             "ratio_vs_ort_fp32 <= 0.5": _le(result["ratio_vs_ort_fp32"], 0.5)}
    result["ratio_vs_tvm_float"] = ratio("tvm_fxp", "tvm_float")
    result["ratio_vs_tvm_fxp_unfused"] = ratio("tvm_fxp", "tvm_fxp_unfused")
    result["ratio_vs_tvm_fxp_int32_baseline"] = ratio("tvm_fxp", "tvm_fxp_int32_baseline")
    result["ratio_ort_int8_vs_ort_fp32"] = ratio("ort_int8", "ort_fp32")
    result["ratio_tvm_float_vs_ort_fp32"] = ratio("tvm_float", "ort_fp32")
    result["ratios_python_loop"] = {
        "tvm_fxp/ort_fp32": ratio("tvm_fxp@python_loop", "ort_fp32"),
        "tvm_fxp/ort_int8": ratio("tvm_fxp@python_loop", "ort_int8"),
        "tvm_fxp/tvm_float": ratio("tvm_fxp@python_loop", "tvm_float@python_loop"),
    }
    result["wall_seconds"] = round(time.time() - t_start, 1)
    print_table(name, result)
    return result


def _fmt(v, spec):
    return "n/a" if v is None else format(v, spec)


def print_table(name: str, r: dict) -> None:
    med, pyl, agr = r["median_ms"], r["median_ms_python_loop"], r["agreement_with_ort_fp32"]
    acc = r.get("top1_accuracy", {})
    print(f"\n== {name}: batch 1, 1 thread, median of {r['repeats']} repeats ==")
    print(f"  {'engine':<23} {'ms/inf':>9} {'py-loop ms':>11} {'calls/rep':>10} {'agree/ortfp32':>14} {'top1':>7}")
    for k in ENGINES:
        print(f"  {k:<23} {_fmt(med.get(k), '9.4f')} {_fmt(pyl.get(k), '11.4f') if k in pyl else ' ' * 11}"
              f" {r['calls_per_repeat'].get(k, 0):>10d} {_fmt(agr.get(k), '14.3f')} {_fmt(acc.get(k), '7.3f')}")
    print(f"  tvm_fxp/ort_fp32  = {_fmt(r['ratio_vs_ort_fp32'], '.3f')}"
          f"   (py-loop {_fmt(r['ratios_python_loop']['tvm_fxp/ort_fp32'], '.3f')})  target <= 0.5")
    print(f"  tvm_fxp/ort_int8  = {_fmt(r['ratio_vs_ort_int8'], '.3f')}"
          f"   (py-loop {_fmt(r['ratios_python_loop']['tvm_fxp/ort_int8'], '.3f')})  target <= 1.0")
    print(f"  tvm_fxp/tvm_fxp_unfused = {_fmt(r['ratio_vs_tvm_fxp_unfused'], '.3f')}"
          f"   tvm_fxp/tvm_fxp_int32_baseline = {_fmt(r['ratio_vs_tvm_fxp_int32_baseline'], '.3f')}")
    print(f"  plan: {r['plan']['source']}; top1 {_fmt(acc.get('tvm_fxp'), '.4f')} on {r['agreement_images']} test "
          f"images; fused == unfused: {r.get('tvm_fxp_fused_equals_unfused')}")
    print(f"  load average before/after timing: {r['loadavg_before_after_timing']}", flush=True)


# --------------------------------------------------------------------------- main

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=11, help="timed repeats per engine (median taken; default 11)")
    ap.add_argument("--repeat-seconds", type=float, default=0.2,
                    help="target duration of one repeat in seconds (default 0.2)")
    ap.add_argument("--models", nargs="+", default=list(MODELS),
                    help="model names (fmnist_vgg, fmnist_resnet; 'vgg'/'resnet' accepted) or .onnx paths")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "latency.json")
    ap.add_argument("--plans", type=Path, default=REPO / "bench" / "results" / "plans",
                    help="directory with {model}_debruin2020_untiled.json (bench/methods.py writes them)")
    ap.add_argument("--search-seconds", type=float, default=200.0,
                    help="time limit of the debruin2020 search when no plan file exists (default 200)")
    ap.add_argument("--eval-images", type=int, default=1000,
                    help="test images for top-1 / agreement (default 1000)")
    args = ap.parse_args(argv)
    if args.repeats < 1:
        ap.error("--repeats must be >= 1")

    models = {}
    for m in args.models:
        if m.endswith(".onnx"):
            models[Path(m).stem] = Path(m).resolve()
        elif m in MODELS:
            models[m] = MODELS[m]
        elif f"fmnist_{m}" in MODELS:
            models[f"fmnist_{m}"] = MODELS[f"fmnist_{m}"]
        else:
            ap.error(f"unknown model {m!r}; known: {', '.join(MODELS)}")

    ort.set_default_logger_severity(3)  # silence the "optimized model is hardware specific" warning
    print(f"tvm {tvm.__version__}, onnxruntime {ort.__version__}, TVM_NUM_THREADS={os.environ['TVM_NUM_THREADS']}")
    train = fashion_mnist("train", limit=max(N_ORT_CALIB, N_TVM_CALIB))
    test = fashion_mnist("test", limit=args.eval_images)
    print(f"data: train {train.inputs.shape} ({train.source}); test {test.inputs.shape}")

    out = {
        "machine": machine_info(),
        "tvm_version": tvm.__version__,
        "onnxruntime_version": ort.__version__,
        "numpy_version": np.__version__,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "config": {"batch": 1, "threads": 1, "repeats": args.repeats, "repeat_seconds": args.repeat_seconds,
                   "tvm_target": str(tvm_fxp.api.host_target()),
                   "tvm_target_features": tvm_target_features(), "tvm_timer": "VirtualMachine.time_evaluator",
                   "ort_timer": "time.perf_counter loop over InferenceSession.run",
                   "ort_session": "CPUExecutionProvider, intra_op=1, inter_op=1, ORT_SEQUENTIAL, ORT_ENABLE_ALL",
                   "tvm_fxp_method": ("de Bruin 2020 plan (acc_bits=16), realized(accumulator='narrow'), "
                                      "tvm_fxp.build: fused integer kernels (tvm_fxp.schedules.pipeline)"),
                   "tvm_fxp_unfused_method": ("same realized module, TVM's cpu_generic pipeline with our kernels, "
                                              "epilogues unfused (relax_pipeline(target, fuse=False))"),
                   "tvm_fxp_int32_baseline_method": ("Uniform(bits=8), realized (int32 accumulators), tvm.compile "
                                                     "default pipeline, TVM's own legalization"),
                   "eval_images": args.eval_images,
                   "data_source": train.source},
        "models": {},
        "skipped": {},
        "notes": NOTES,
        "notes_detail": ("median_ms: TVM via VirtualMachine.time_evaluator (C++ loop), ORT via a Python "
                         "perf_counter loop over InferenceSession.run; median_ms_python_loop times TVM the "
                         "same way as ORT. tvm_fxp.build targets the host CPU (llvm -mcpu=<host>); our kernels "
                         "are untuned TIR schedules (int16 multiply-add, no VNNI); ORT uses hand-written "
                         "AVX2/AVX-512/VNNI kernels."),
    }
    with tempfile.TemporaryDirectory(prefix="tvmfxp-latency-") as td:
        for name, path in models.items():
            print(f"\n[{name}] {path}")
            if not path.is_file():
                print(f"  note: {path} not found -- skipping {name}")
                out["skipped"][name] = f"file not found: {path}"
                continue
            try:
                out["models"][name] = bench_model(name, path, args, train.inputs, test, Path(td))
            except Exception as e:  # noqa: BLE001 -- keep other models' results
                traceback.print_exc()
                out["skipped"][name] = "failed: " + "".join(traceback.format_exception_only(type(e), e)).strip()

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return 0 if out["models"] else 1


if __name__ == "__main__":
    sys.exit(main())
