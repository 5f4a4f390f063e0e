"""The ``tvm-fxp`` command line.

    tvm-fxp quantize MODEL.onnx --calib DATA --method uniform --bits 8 --out DIR
    tvm-fxp evaluate DIR --data DATA
    tvm-fxp report DIR
    tvm-fxp compile DIR --target rpi4 --out DIR2
    tvm-fxp run DIR --rpc HOST:PORT --data DATA
    tvm-fxp tune DIR --target host --trials 64
    tvm-fxp finetune DIR --data fashion-mnist --epochs 2 --out DIR2

DATA is ``fashion-mnist`` (calibrate on training images; searches score plans on the validation split, images
the reference models never saw; measure on the full 10,000-image test split when the Debian package is
installed, else on the bundled subset; the test split is never read during a search), an ``.npz`` of inputs (and optional labels), or
``synthetic`` (random inputs of the model's input shape; accuracy keys are then null).  A model with several
inputs takes ``synthetic`` (one random array per input) or an ``.npz`` holding one array per input name (and
optional ``labels``); every output is checked and reported.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from . import api
from .batching import Batching
from .calibrate import CalibrationError
from .data import count, image_preprocess, load_data, preprocess_from_summary
from .datasets import Dataset, TestSplitGuard, fashion_mnist
from .formats import FormatError
from .methods import METHODS, MethodError, Uniform
from .plan import Plan, PlanError
from .report import agreement, markdown_report, plan_costs, top1

SUMMARY_KEYS = ("method", "float_top1", "fxp_top1", "agreement", "weight_bits", "activation_bits",
                "memory_reduction_vs_float", "mult_cost_vs_8bit", "max_accumulator_bits", "bit_exact",
                "float_ops_in_integer_graph", "search", "wall_s")


class CliError(Exception):
    pass


def _onnxruntime_outputs(path: Path, inputs, batch: int | None, n: int = 64) -> list | None:
    """onnxruntime's outputs (every graph output) of the original ONNX file on the first ``n`` inputs (a list of
    arrays, in the model's input order, for several inputs; None: it cannot run it)."""
    import onnx
    import onnxruntime as ort

    from .batching import Batching, concat, padded_chunks, trim

    arrays = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
    try:
        model = onnx.load(str(path))
        so = ort.SessionOptions()
        so.log_severity_level = 3
        sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    except Exception:
        return None
    names = [i.name for i in sess.get_inputs()]
    try:
        chunks = [trim(sess.run(None, dict(zip(names, xs))), stop - start, len(xs[0]))
                  for start, stop, xs in padded_chunks([a[:n] for a in arrays], Batching(batch, 256))]
    except Exception:
        return None
    return concat(chunks)


def measure(q: api.Quantized, fxp_runner: api.Runner, data: Dataset, batch_size: int = 256,
            source: Path | None = None) -> dict:
    """Float, simulated and realized outputs on ``data``: accuracy, agreement and bit-exactness; with the
    original ONNX ``source``, the prepared float model is checked against onnxruntime on the first inputs."""
    from .passes import float_ops_in_integer_graph

    batch = q.batch
    float_out = api.Runner(api.build(q.prepared), batch=batch).run(data.inputs, batch_size)
    sim_out = api.Runner(api.build(q.simulated()), batch=batch).run(data.inputs, batch_size)
    fxp_out = fxp_runner.run(data.inputs, batch_size)
    # several outputs (detection heads): each checked and compared with float on its own; top-1/agreement only
    # mean something for one (classifier) output
    listed = [o if isinstance(o, list) else [o] for o in (float_out, sim_out, fxp_out)]
    single = len(listed[0]) == 1
    outputs = [{"layer": name, "format": str(q.plan[q.graph.layers[name].output_key]),
                "bit_exact": bool(np.array_equal(s, x)),
                "relative_l2_vs_float": float(np.linalg.norm(x - f) / max(np.linalg.norm(f), 1e-30))}
               for name, f, s, x in zip(q.graph.outputs, *listed)]
    out = {
        "float_top1": top1(float_out, data.labels) if single else None,
        "fxp_top1": top1(fxp_out, data.labels) if single else None,
        "agreement": agreement(float_out, fxp_out) if single else None,
        "bit_exact": all(o["bit_exact"] for o in outputs),
        "outputs": outputs,
        "float_ops_in_integer_graph": len(float_ops_in_integer_graph(q.realized())),
        "evaluated_inputs": int(count(data.inputs)),
        "data_source": data.source,
    }
    if source is not None:
        refs = _onnxruntime_outputs(source, data.inputs, batch)
        if refs is None:
            out["onnxruntime_check"] = "not checked: onnxruntime cannot run the original model with these inputs"
        else:
            worst = 0.0
            for name, mine, ref in zip(q.graph.outputs, listed[0], refs):
                mine = mine[:len(ref)]
                if mine.size != ref.size:
                    raise CliError(f"{source}: the prepared model's output {name} {list(mine.shape[1:])} differs in "
                                   f"shape from onnxruntime's {list(ref.shape[1:])} on the original file")
                mine = mine.reshape(ref.shape)
                worst = max(worst, float(np.abs(mine.astype(np.float64) - ref).max())
                            / max(float(np.abs(ref).max()), 1e-6))
            if worst > 1e-3:
                raise CliError(f"{source}: the prepared float model differs from onnxruntime on the original file "
                               f"(max relative difference {worst:.2e} on {len(refs[0])} inputs): an importer or "
                               "simplifier bug; try --no-simplify and report the model")
            out["onnxruntime_check"] = {"inputs": int(len(refs[0])), "max_rel_diff": worst}
            if single:
                out["onnxruntime_check"]["top1_agreement"] = agreement(refs[0], listed[0][0][:len(refs[0])]
                                                                       .reshape(refs[0].shape))
    return out


def method_config(args):
    from .methods.debruin2020 import DeBruin2020
    from .methods.fxpqnet import FxpQNet
    from .methods.goyal2021 import Goyal2021
    from .methods.lin2016 import Lin2016

    budget = {} if args.budget is None else {"budget": args.budget / 100.0}    # else the method's own default
    if args.method == "uniform":
        return Uniform(bits=args.bits, per_channel_weights=args.per_channel)
    if args.method == "lin2016":
        return Lin2016(**budget)
    if args.method == "goyal2021":
        return Goyal2021(**budget)
    if args.method == "fxpqnet":
        return FxpQNet(**budget, bias_correction=args.bias_correction != "off")
    if args.method == "debruin2020":
        return DeBruin2020(acc_bits=args.acc_bits, max_tiles=args.max_tiles)
    if args.method == "mellempudi2017":
        from .methods.mellempudi2017 import Mellempudi2017

        return Mellempudi2017(cluster=args.cluster, weights=args.weights, first_last_bits=args.first_last_bits,
                              act_bits=args.act_bits)
    raise MethodError(f"unknown method {args.method!r}; available: {sorted(METHODS)}")


def search_data(spec: str, lg, args) -> Dataset:
    """Data the search methods score plans on: for fashion-mnist the validation split (the last 5,000
    training-file images, which the reference models were not trained on; never the test split), else the
    given data."""
    if spec == "fashion-mnist":
        return fashion_mnist("val", limit=args.search_size)
    return load_data(spec, lg, "calib", args.search_size, args.seed + 7, args)


def check_data(spec: str, args) -> Dataset | None:
    """A search's check split (goyal2021 confirms each choice on it): for fashion-mnist the validation images
    after the search's (``--search-size`` of them, never the test split); other sources have none."""
    if spec != "fashion-mnist":
        return None
    val = fashion_mnist("val", limit=2 * args.search_size)
    if len(val.inputs) <= args.search_size:
        return None
    n = args.search_size
    return Dataset(val.inputs[n:], val.labels[n:], f"{val.source.split(',')[0]}, images {n}-{len(val.inputs) - 1} "
                   "of the split (after the search's)")


def choose_plan(args, method, prepared, lg, stats) -> tuple[Plan, dict | None]:
    """Run ``method`` (its search to its own stopping rule unless ``--time-limit``) and the optional bias
    correction; returns the plan and what the search did (data, evaluations, wall time, its own estimate of
    the plan's accuracy on the search data).  The test split cannot be read meanwhile (``TestSplitGuard``)."""
    from .methods import get_method, needs_evaluation

    t0, cpu0 = time.time(), time.process_time()
    info = None
    with TestSplitGuard(f"the {method.name} search"):
        evaluate, sd = None, None
        if needs_evaluation(method) or args.bias_correction == "on":
            sd = search_data(args.calib, lg, args)
        if needs_evaluation(method):
            labels = None if getattr(method, "label_free", False) else sd.labels
            check = check_data(args.calib, args) if getattr(method, "check_split", False) else None
            evaluate = api.make_evaluator(prepared, lg, stats, sd.inputs, labels, args.time_limit, not args.quiet,
                                          check_inputs=check.inputs if check else None,
                                          check_labels=check.labels if check else None)
            print(f"searching on {count(sd.inputs)} inputs ({sd.source}; "
                  f"{'labels' if labels is not None else 'label-free'})"
                  + (f"; {getattr(method, 'check_role', 'each choice confirmed on')} {count(check.inputs)} more "
                     f"({check.source})" if check else ""),
                  file=sys.stderr)
        plan = get_method(method.name).allocate(lg, stats, method, evaluate)
        if args.bias_correction == "on" and method.name != "fxpqnet":   # FxP-QNet corrects within its budget
            from .methods.correction import correct_biases

            if evaluate is None:
                evaluate = api.make_evaluator(prepared, lg, stats, sd.inputs, None, None, False)
            plan, report = correct_biases(lg, plan, evaluate)
            plan.config = {**plan.config, "correction": report}
            print(f"bias correction ({'applied' if report['applied'] else 'not applied: no gain'}): agreement "
                  f"with float {report['agreement_before']:.4f} -> {report['agreement_after']:.4f} on "
                  f"{count(evaluate.inputs)} unlabelled inputs", file=sys.stderr)
        if evaluate is not None:
            from .metrics import agreement as agree, top1 as top

            wall = time.time() - t0
            # the search's own estimate of the chosen plan (labels, when there are any, only for this report:
            # a label-free search never saw them)
            out = evaluate.sim.outputs(plan, evaluate.inputs)
            info = {"data": sd.source, "inputs": int(count(sd.inputs)),
                    "labels": "label-free" if not evaluate.use_labels else "top-1",
                    "evaluations": int(evaluate.evaluations), "wall_s": round(wall, 2),
                    # CPU seconds of this process (all its threads): on a shared machine the wall time is not ours
                    "cpu_s": round(time.process_time() - cpu0, 2),
                    "images_simulated": int(evaluate.images + (evaluate.check.images if evaluate.check else 0)),
                    "stopped_by": "time limit" if evaluate.out_of_time() and args.time_limit else "its own rule",
                    "time_limit_s": args.time_limit,
                    "check": None if evaluate.check is None else {
                        "data": check.source, "inputs": int(count(check.inputs)),
                        "evaluations": int(evaluate.check.evaluations),
                        "fxp_top1": evaluate.check(plan, limited=False).top1,
                        "float_top1": evaluate.check.float_top1},
                    "estimate": {"float_top1": top(evaluate.float_out, sd.labels), "fxp_top1": top(out, sd.labels),
                                 "agreement": agree(evaluate.float_out, out)}}
    return plan, info


def cmd_quantize(args) -> dict:
    t0 = time.time()
    out = Path(args.out)
    method = method_config(args)
    imported: dict = {}
    prepared, lg = api.load_model(args.model, args.input_shape, args.allow_float_islands, not args.no_simplify,
                                  imported)
    calib = load_data(args.calib, lg, "calib", args.calib_size, args.seed, args)
    print(f"calibrating on {count(calib.inputs)} inputs ({calib.source})", file=sys.stderr)
    from .calibrate import calibrate

    stats = calibrate(prepared, lg, calib.inputs, batch_size=args.batch_size, progress=not args.quiet)
    search = None
    if args.plan:
        plan = Plan.load(args.plan)
    else:
        plan, search = choose_plan(args, method, prepared, lg, stats)
    if args.accumulator is None:   # de Bruin's plans claim 16-bit (k-tiled) accumulators: realize exactly that
        args.accumulator = "narrow" if plan.method == "debruin2020" else "proven"
    plan.model = {"name": Path(args.model).name, "sha256": api.model_digest(args.model)}
    q = api.bind_plan(prepared, lg, plan, stats)
    out.mkdir(parents=True, exist_ok=True)
    plan.save(out / "plan.json")
    shutil.copyfile(args.model, out / "source.onnx")
    from . import deploy

    build_info = deploy.build_library(q, args.target, out, args.accumulator, args.tuning_db)
    realized = q.realized(args.accumulator)
    data_spec = args.data or args.calib
    eval_data = load_data(data_spec, lg, "eval", args.eval_size, args.seed, args)
    print(f"measuring on {count(eval_data.inputs)} inputs ({eval_data.source})", file=sys.stderr)
    summary = {"model": Path(args.model).name, "method": plan.method, "config": plan.config,
               "input_shape": args.input_shape, "batching": Batching(q.batch, args.batch_size).describe(),
               "import": {"simplified": not args.no_simplify, **imported}, "target": build_info["preset"]}
    if Path(args.calib).is_dir() or (args.data and Path(args.data).is_dir()):
        summary["preprocess"] = image_preprocess(args).to_json()
    if build_info["runs_on_host"]:
        fxp_runner = api.Runner(out / "model.so", batch=q.batch)
    else:
        print(f"model.so is built for {build_info['arch']}: measuring a host build of the same plan "
              "(run the board's library with `tvm-fxp run DIR --rpc HOST:PORT`)", file=sys.stderr)
        fxp_runner = api.Runner(api.build(realized), batch=q.batch)
    summary.update(measure(q, fxp_runner, eval_data, args.batch_size, Path(args.model)))
    summary.update(plan_costs(q))
    summary["calibration"] = {"inputs": int(count(calib.inputs)), "source": calib.source, "spec": args.calib}
    summary["search_data"] = search["data"] if search else None
    summary["search"] = search
    summary["accumulator_policy"] = args.accumulator
    from .passes.realize import accumulator_reasons, realized_accumulators

    summary["accumulators"] = realized_accumulators(realized)
    summary["accumulator_reasons"] = accumulator_reasons(realized)
    summary["kernels"] = build_info["kernels"]         # per layer, for the target built (build.json has the same)
    from .passes import float_islands

    summary["float_islands"] = [{"layer": n, "op": op} for n, op in float_islands(lg)]
    summary["wall_s"] = round(time.time() - t0, 2)
    _write_outputs(out, q, summary)
    return summary


def cmd_report(args) -> dict:
    from .report import render_report

    d = Path(args.dir)
    for f in ("plan.json", "source.onnx", "summary.json"):
        if not (d / f).exists():
            raise CliError(f"{d / f} is missing: is {d} the --out directory of `tvm-fxp quantize`?")
    summary = json.loads((d / "summary.json").read_text())
    plan = Plan.load(d / "plan.json")
    prepared, lg = api.load_model(d / "source.onnx", summary.get("input_shape"), bool(summary.get("float_islands")),
                                  (summary.get("import") or {}).get("simplified", True))
    q = api.bind_plan(prepared, lg, plan)
    spec = args.data or (summary.get("calibration") or {}).get("spec") or "synthetic"
    preprocess_from_summary(args, summary)
    data = load_data(spec, lg, "calib", args.calib_size, args.seed, args)
    timing = None
    if (d / "model.so").exists() and summary.get("target", "host") == "host":
        from .report import timing_markdown, timing_rows

        timing = timing_rows(q, d / "model.so", data.inputs,
                             accumulator=summary.get("accumulator_policy", "proven"))
        (d / "report_timing.md").write_text(timing_markdown(timing))
        print(timing_markdown(timing, top=10), file=sys.stderr)
    out = render_report(q, summary, d, data.inputs, timing)
    print(f"wrote {out['html']} and {out['png']}" + (f" and {d / 'report_timing.md'}" if timing else ""),
          file=sys.stderr)
    return summary


def cmd_evaluate(args) -> dict:
    t0 = time.time()
    d = Path(args.dir)
    for f in ("plan.json", "model.so", "source.onnx"):
        if not (d / f).exists():
            raise CliError(f"{d / f} is missing: is {d} the --out directory of `tvm-fxp quantize`?")
    plan = Plan.load(d / "plan.json")
    prev = json.loads((d / "summary.json").read_text()) if (d / "summary.json").exists() else {}
    input_shape = args.input_shape or prev.get("input_shape")
    prepared, lg = api.load_model(d / "source.onnx", input_shape, bool(prev.get("float_islands")),
                                  (prev.get("import") or {}).get("simplified", True))
    q = api.bind_plan(prepared, lg, plan)
    preprocess_from_summary(args, prev)
    data = load_data(args.data, lg, "eval", args.eval_size, args.seed, args)
    summary = {"model": plan.model.get("name", "source.onnx"), "method": plan.method, "config": plan.config,
               "input_shape": input_shape, "batching": Batching(q.batch, args.batch_size).describe()}
    summary.update(measure(q, api.Runner(d / "model.so", batch=q.batch), data, args.batch_size,
                           d / "source.onnx"))
    summary.update(plan_costs(q))
    summary["wall_s"] = round(time.time() - t0, 2)
    _write_outputs(d, q, summary, name="evaluation")
    return summary


def _write_outputs(out: Path, q, summary: dict, name: str = "summary") -> None:
    (out / f"{name}.json").write_text(json.dumps(summary, indent=1) + "\n")
    (out / ("report.md" if name == "summary" else f"{name}.md")).write_text(markdown_report(q, summary))


def _shape(s: str):
    try:
        return [int(v) for v in s.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--input-shape must be comma-separated integers, got {s!r}") from None


def _target_args(p) -> None:
    p.add_argument("--target", default="host",
                   help="host (this CPU), rpi4 (Raspberry Pi 4, aarch64 Cortex-A72, cross-compiled), rpi3 (32-bit "
                        "Raspberry Pi OS, armv7 Cortex-A53), or a TVM target dict as JSON or a .json file")
    p.add_argument("--tuning-db", default=None,
                   help="use the schedules tuned by `tvm-fxp tune` (its DIR/tuning directory)")


def cmd_compile(args) -> dict:
    from . import deploy

    t0 = time.time()
    d, out = Path(args.dir), Path(args.out)
    q, prev = deploy.load_quantized_dir(d)
    plan = q.plan
    accumulator = args.accumulator or prev.get("accumulator_policy") or "wide"
    if out.resolve() != d.resolve():
        out.mkdir(parents=True, exist_ok=True)
        for f in ("plan.json", "source.onnx", "summary.json", "report.md"):
            if (d / f).exists():
                shutil.copyfile(d / f, out / f)
    info = deploy.build_library(q, args.target, out, accumulator, args.tuning_db)
    print(f"wrote {out / 'model.so'} for {info['preset']} ({info['arch']}) and {out / deploy.BUILD_INFO}",
          file=sys.stderr)
    return {"method": plan.method, "target": info["preset"], "arch": info["arch"],
            "kernels_from_tuning_db": (info["tuning_db"] or {}).get("kernels_from_db"),
            "wall_s": round(time.time() - t0, 2)}


def _ints(s: str):
    try:
        return [int(v) for v in s.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {s!r}") from None


def _floats(s: str):
    try:
        return [float(v) for v in s.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {s!r}") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tvm-fxp", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--batch-size", type=int, default=256)
    common.add_argument("--eval-size", type=int, default=None, help="evaluate on the first N inputs only")
    common.add_argument("--input-shape", type=_shape, default=None, help="static input shape, e.g. 1,3,224,224")
    common.add_argument("--seed", type=int, default=0)
    common.add_argument("--quiet", action="store_true")
    common.add_argument("--no-simplify", action="store_true",
                        help="import the ONNX graph as it is (default: fold shape computations with onnxslim, "
                             "checked against onnxruntime)")
    img = common.add_argument_group("image folders (--calib DIR / --data DIR: JPEG/PNG, labels from sub-folders)")
    img.add_argument("--preprocess", default=None, choices=["imagenet", "none"],
                     help="imagenet: resize 256, centre crop 224, RGB, mean/std normalization, NCHW")
    img.add_argument("--resize", type=_ints, default=None, help="short side S, or H,W")
    img.add_argument("--crop", type=_ints, default=None, help="centre crop S or H,W")
    img.add_argument("--mean", type=_floats, default=None, help="per-channel mean after scaling, e.g. 0.5,0.5,0.5")
    img.add_argument("--std", type=_floats, default=None, help="per-channel std, e.g. 0.5,0.5,0.5")
    img.add_argument("--scale", type=float, default=None, help="pixel multiplier before mean/std (default 1/255)")
    img.add_argument("--channels", default=None, choices=["RGB", "BGR", "L"])
    img.add_argument("--layout", default=None, choices=["NCHW", "NHWC"])
    img.add_argument("--labels", default=None,
                     help="class names, one per line in the model's class-index order (e.g. ImageNet's); "
                          "sub-folder names are matched against them (default: sorted sub-folder names)")
    q = sub.add_parser("quantize", parents=[common], help="calibrate, choose formats, realize and build")
    q.add_argument("model")
    q.add_argument("--calib", required=True, help="fashion-mnist | synthetic | FILE.npz | DIR of images")
    q.add_argument("--data", default=None, help="evaluation data (default: same source as --calib)")
    q.add_argument("--calib-size", type=int, default=500)
    q.add_argument("--method", default="uniform", choices=sorted(METHODS))
    q.add_argument("--bits", type=int, default=8, help="uniform: bits of every tensor")
    q.add_argument("--budget", type=float, default=None,
                   help="search methods: loss budget in points (default: the method's own -- lin2016 and goyal2021 "
                        "1 point of top-1; fxpqnet, label-free, 2 points of top-1 agreement with the float model)")
    q.add_argument("--acc-bits", type=int, default=16, help="debruin2020: accumulator width P")
    q.add_argument("--cluster", type=int, default=4, help="mellempudi2017: filters per cluster sharing a scale")
    q.add_argument("--weights", default="ternary", choices=["ternary", "4bit"], help="mellempudi2017: weight levels")
    q.add_argument("--act-bits", type=int, default=8,
                   help="mellempudi2017: activation bits (default 8; with --weights ternary, 4 or fewer let an aarch64 "
                        "build run the multiply-free bit-serial kernel where it is estimated faster)")
    q.add_argument("--first-last-bits", type=int, default=8,
                   help="mellempudi2017: bits of the first and last layers' weights (0: cluster them too)")
    q.add_argument("--max-tiles", type=int, default=None,
                   help="debruin2020: k-tiles of 16-bit partial sums where no whole configuration keeps accuracy "
                        "(default 8 with --acc-bits 16; 0: whole reductions only)")
    q.add_argument("--bias-correction", default="auto", choices=["auto", "on", "off"],
                   help="label-free bias correction after the method (auto: fxpqnet only)")
    q.add_argument("--search-size", type=int, default=2000,
                   help="inputs the search methods score plans on (fashion-mnist: the first N of the 5,000 "
                        "validation images)")
    q.add_argument("--time-limit", type=float, default=None,
                   help="seconds; a search then returns its best plan so far (default: none, every search runs "
                        "to its own stopping rule)")
    q.add_argument("--accumulator", default=None, choices=["proven", "wide", "narrow"],
                   help="proven (default; narrow for debruin2020): int16 accumulators per layer wherever the plan "
                        "proves them safe; wide: int32/int64 everywhere (opt-out); narrow: also k-tiled int16 "
                        "partial sums")
    q.add_argument("--per-channel", action="store_true", help="per-channel weight formats")
    q.add_argument("--allow-float-islands", action="store_true",
                   help="keep ops with no integer realization (sigmoid, tanh, gelu, ...) in float between a "
                        "dequantize and a quantize (listed in summary.json and the report) instead of refusing")
    q.add_argument("--plan", default=None, help="use this (hand-edited) plan.json instead of a method")
    _target_args(q)
    q.add_argument("--out", required=True)
    c = sub.add_parser("compile", help="rebuild a quantized directory's plan for another target (no calibration)")
    c.add_argument("dir")
    _target_args(c)
    c.add_argument("--accumulator", default=None, choices=["wide", "narrow"],
                   help="default: the policy DIR was quantized with")
    c.add_argument("--out", required=True)
    from . import finetune, remote, tune

    finetune.add_finetune_parser(sub, common)
    remote.add_run_parser(sub, common)
    tune.add_tune_parser(sub, common)
    e = sub.add_parser("evaluate", parents=[common], help="re-measure a quantized model directory")
    e.add_argument("dir")
    e.add_argument("--data", required=True)
    r = sub.add_parser("report", parents=[common], help="per-layer tables and plots (HTML + PNG) of a directory")
    r.add_argument("dir")
    r.add_argument("--data", default=None, help="inputs for activation SQNR (default: the calibration data)")
    r.add_argument("--calib-size", type=int, default=128)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from .passes import FxpGraphError

    try:
        from . import finetune, remote, tune

        commands = {"quantize": cmd_quantize, "evaluate": cmd_evaluate, "report": cmd_report,
                    "compile": cmd_compile, "run": remote.cmd_run, "tune": tune.cmd_tune,
                    "finetune": lambda a: finetune.cmd_finetune(
                        a, lambda argv: cmd_quantize(build_parser().parse_args(argv)))}
        summary = commands[args.cmd](args)
    except (CliError, api.ModelError, PlanError, FormatError, MethodError, CalibrationError, FxpGraphError,
            FileNotFoundError, ValueError) as e:   # FinetuneError is a ValueError
        print(f"tvm-fxp: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tvm-fxp: interrupted", file=sys.stderr)
        return 130
    except Exception as e:   # a bug of ours or TVM's: one clear line, the traceback only on request
        if os.environ.get("TVM_FXP_DEBUG"):
            raise
        msg = str(e).strip().splitlines()[-1] if str(e).strip() else ""
        print(f"tvm-fxp: internal error ({type(e).__name__}: {msg[:500]}) in `tvm-fxp {args.cmd}`; this is a bug: "
              "please report it with the model file (TVM_FXP_DEBUG=1 shows the traceback)", file=sys.stderr)
        return 3
    if args.cmd in ("compile", "run", "tune"):
        print(json.dumps(summary, indent=1))
        return 0
    print(json.dumps({k: summary.get(k) for k in SUMMARY_KEYS + ("data_source",)}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
