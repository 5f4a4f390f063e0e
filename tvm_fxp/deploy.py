"""Build a realized model for a target board: target specs, cross-compilation, ``build.json``.

    target = resolve_target("rpi4")                     # or "host", or a TVM target dict as JSON
    info = build_library(q, target, "out/", accumulator="narrow", tuning_db="out/tuning")

``resolve_target`` turns a user's spec into a ``Target``: a preset name (``host``, ``rpi4``; presets are data
in ``tvm_fxp.schedules.targets``) or a TVM target dict (JSON text, or a path to a ``.json`` file).
``export_library`` writes ``model.so`` with the C++ toolchain of the target's architecture (the host's
compiler for the host, ``aarch64-linux-gnu-g++`` for an aarch64 board); when the cross toolchain is missing
the error names the Debian package that installs it.  The library needs only the TVM runtime on the board.

``build.json`` records what was built so that a build can be reproduced and audited: the target (preset and
full dict), the kernel every weighted layer got (layout, lanes, register block, accumulator), the
accumulator per layer as the plan proved it, the tuning database (and how many kernels came from it), and
the tool versions.
"""

from __future__ import annotations

import json
import platform
import re
import shutil
import time
from pathlib import Path

import tvm

BUILD_INFO = "build.json"

# architecture -> (C++ cross compiler, Debian package that installs it)
CROSS_TOOLCHAINS = {
    "aarch64": ("aarch64-linux-gnu-g++", "g++-aarch64-linux-gnu"),
    "arm": ("arm-linux-gnueabihf-g++", "g++-arm-linux-gnueabihf"),
}


class DeployError(ValueError):
    """A target, toolchain or build directory cannot be used; the message says what to do."""


def resolve_target(spec) -> tuple:
    """``(Target, name)`` for a preset name, a TVM target dict, JSON text of one, or a ``.json`` file.

    ``name`` is the preset name, or ``"custom"`` for a dict.
    """
    from .schedules import targets

    if isinstance(spec, tvm.target.Target):
        return spec, "custom"
    if isinstance(spec, dict):
        return _target_from_dict(spec, "the target dict"), "custom"
    text = str(spec).strip()
    if text == "host" or text in targets.PRESETS:
        return targets.preset(text), text
    if text.startswith("{"):
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise DeployError(f"--target {text!r} is not valid JSON: {e}") from None
        return _target_from_dict(d, "--target"), "custom"
    p = Path(text)
    if p.suffix == ".json" and p.is_file():
        try:
            d = json.loads(p.read_text())
        except json.JSONDecodeError as e:
            raise DeployError(f"{p} is not valid JSON: {e}") from None
        return _target_from_dict(d, str(p)), "custom"
    raise DeployError(f"unknown target {text!r}: use a preset (host, {', '.join(targets.PRESETS)}) or a TVM target "
                      'dict as JSON, e.g. \'{"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a72"}\'')


def _target_from_dict(d, where: str) -> tvm.target.Target:
    if not isinstance(d, dict) or "kind" not in d:
        raise DeployError(f"{where}: a target dict needs at least a 'kind' (e.g. \"llvm\"), got {d!r}")
    try:
        return tvm.target.Target(d)
    except Exception as e:  # noqa: BLE001 -- TVM raises its own error types for bad target attributes
        msg = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise DeployError(f"{where}: TVM does not accept the target {json.dumps(d)}: {msg}") from None


def target_arch(target: tvm.target.Target) -> str:
    """``aarch64``, ``arm``, ``x86_64``, ... of the code ``target`` generates."""
    triple = str(target.attrs.get("mtriple", "") or "") or tvm.target.codegen.llvm_get_system_triple()
    arch = triple.split("-", 1)[0]
    if arch in ("arm64", "aarch64"):
        return "aarch64"
    if arch.startswith(("armv", "arm", "thumb")):
        return "arm"
    if arch in ("x86_64", "amd64"):
        return "x86_64"
    return arch


def host_arch() -> str:
    m = platform.machine().lower()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(m, m)


def runs_on_host(target: tvm.target.Target) -> bool:
    """Whether a library built for ``target`` can be loaded by this machine's TVM."""
    return target.kind.name == "llvm" and target_arch(target) == host_arch()


def fcompile_for(target: tvm.target.Target):
    """The ``fcompile`` for ``export_library``: None (the host compiler) or a fresh cross compiler.

    Raises DeployError naming the package to install when the cross toolchain is missing.
    """
    if runs_on_host(target):
        return None
    arch = target_arch(target)
    if arch not in CROSS_TOOLCHAINS:
        raise DeployError(f"no cross toolchain known for {arch} (target {target_json(target)}); "
                          f"known: {', '.join(CROSS_TOOLCHAINS)}")
    cxx, package = CROSS_TOOLCHAINS[arch]
    if shutil.which(cxx) is None:
        raise DeployError(f"the {arch} cross compiler {cxx} is not installed: install it with "
                          f"`sudo apt-get install {package}` (Debian/Ubuntu), then build again")
    from tvm.support import cc

    return cc.cross_compiler(cxx)   # TVM's appends options to it in place: a fresh one per export


def export_library(ex, path, target: tvm.target.Target) -> Path:
    """Write ``ex`` (a VM executable) as a shared library for ``target``."""
    path = Path(path)
    fcompile = fcompile_for(target)
    if fcompile is None:
        ex.export_library(str(path))
    else:
        ex.export_library(str(path), fcompile=fcompile)
    return path


def target_json(target: tvm.target.Target) -> dict:
    """The target as a plain JSON dict (what ``tvm.target.Target`` takes back)."""
    d = {}
    for k, v in target.export().items():
        if k in ("keys", "host", "tag") or k.startswith("feature.") or v is None:
            continue
        if isinstance(v, (bool, int, float)):
            d[k] = v
        elif isinstance(v, str):
            d[k] = str(v)
        else:
            d[k] = [str(x) for x in v]
        if d[k] in ("", []):
            del d[k]
    d["kind"] = target.kind.name
    return {k: d[k] for k in sorted(d, key=lambda k: (k != "kind", k))}


# ------------------------------------------------------------------------------------------ kernels per layer

def layer_kernels(realized: tvm.IRModule, target: tvm.target.Target) -> dict:
    """``{layer: [kernel, ...]}``: the kernel each conv2d/matmul call of ``realized`` gets on ``target``
    (one per k-tile of a k-tiled layer), in layer order, from the accumulator table Realize wrote."""
    from tvm import relax

    from .passes.realize import realized_accumulators
    from .schedules import legalize as L

    calls = []
    main = realized["main"]
    bound = {b.var: b.value for block in main.body.blocks for b in block.bindings}

    def visit(expr):
        if isinstance(expr, relax.Call) and hasattr(expr.op, "name") and \
                str(expr.op.name) in ("relax.nn.conv2d", "relax.matmul"):
            calls.append(expr)

    relax.analysis.post_order_visit(main.body, visit)
    with target:
        described = [_describe(call, L, target, L.constant_value(call.args[1], bound.get),
                               L.data_upper_bound(call.args[0], bound.get)) for call in calls]
    accumulators = realized_accumulators(realized)
    out, k = {}, 0
    for layer, acc in accumulators.items():
        m = re.search(r"x(\d+) k-tiles", acc)
        n = int(m.group(1)) if m else 1
        out[layer] = described[k:k + n]
        k += n
    if k != len(described):   # a graph whose calls do not follow the table: list the calls unnamed
        return {f"call_{i}": [d] for i, d in enumerate(described)}
    return out


def _describe(call, L, target, weight, data_max) -> dict:
    kind = "conv2d" if str(call.op.name) == "relax.nn.conv2d" else "matmul"
    plan_for = L.conv2d_plan_for if kind == "conv2d" else L.dense_plan_for
    plan = plan_for(call, target, weight, data_max)
    acc = str(call.attrs.out_dtype)
    if plan is None:
        return {"op": kind, "kernel": "tvm-default", "accumulator": acc}
    # ternary layers on aarch64: whether the bit-serial kernel was chosen, and why (its estimate vs the paired one)
    _, why = (L.conv2d_bitserial if kind == "conv2d" else L.dense_bitserial)(call, target, weight, data_max)
    if getattr(plan, "layout", None) == "bitserial":  # multiply-free: ternary weight masks x bit planes of the data
        return {"op": kind, "kernel": "tvm_fxp", "data": plan.data_dtype, "activation_bits": plan.bits,
                "weight": "ternary", "accumulator": plan.acc_dtype, "layout": "bitserial", "lanes": plan.lanes,
                "register_block": list(plan.tile), "why": why}
    if getattr(plan, "layout", None) == "paired":     # gemmlowp/ruy int32 (aarch64; the weights prove the int16 pair sums)
        d = {"op": kind, "kernel": "tvm_fxp", "data": plan.data_dtype, "weight": plan.weight_dtype,
             "accumulator": plan.acc_dtype, "layout": "paired", "register_block": list(plan.tile)}
        return {**d, "why": why} if why else d
    d = {"op": kind, "kernel": "tvm_fxp", "data": plan.data_dtype, "weight": plan.weight_dtype,
         "accumulator": plan.acc_dtype, "lanes": plan.lanes, "register_block": plan.block}
    if kind == "conv2d":
        d["layout"] = plan.layout
    else:
        d["layout"] = "dot" if plan.lanes == 1 else "outputs"
        d["k_split"] = plan.split
    return d


# ------------------------------------------------------------------------------------------ build

def build(realized: tvm.IRModule, target: tvm.target.Target, tuning_db=None) -> tuple:
    """``(executable, tuned kernel count)``: ``tvm_fxp.build`` for ``target``, with the schedules of the
    tuning database ``tuning_db`` (a directory written by ``tvm-fxp tune``) where it has them."""
    from . import api
    from .schedules import tuning

    if tuning_db is None:
        return api.build(realized, target), 0
    with tuning.apply_database(tuning_db) as applied:
        ex = api.build(realized, target)
    return ex, applied.count


def build_library(q, target, out, accumulator: str = "wide", tuning_db=None, preset: str | None = None) -> dict:
    """Realize ``q`` (``api.Quantized``), build it for ``target``, export ``out/model.so`` and write
    ``out/build.json``; returns the build info."""
    from . import __version__ as fxp_version  # noqa: F401 -- present when the package is installed
    from .passes.realize import realized_accumulators

    if not isinstance(target, tvm.target.Target):
        target, preset = resolve_target(target)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    fcompile_for(target)       # fail early (before the build) when the toolchain is missing
    t0 = time.time()
    realized = q.realized(accumulator)
    ex, tuned = build(realized, target, tuning_db)
    lib = export_library(ex, out / "model.so", target)
    info = {
        "library": lib.name,
        "target": target_json(target),
        "preset": preset or "custom",
        "arch": target_arch(target),
        "runs_on_host": runs_on_host(target),
        "accumulator_policy": accumulator,
        "accumulators": realized_accumulators(realized),
        "kernels": layer_kernels(realized, target),
        "tuning_db": None if tuning_db is None else {"path": str(Path(tuning_db).resolve()),
                                                     "kernels_from_db": tuned},
        "plan": {"method": q.plan.method, "model": q.plan.model},
        "versions": {"tvm": tvm.__version__, "tvm_fxp": fxp_version},
        "build_s": round(time.time() - t0, 2),
    }
    (out / BUILD_INFO).write_text(json.dumps(info, indent=1) + "\n")
    return info


def load_quantized_dir(d, input_shape=None) -> tuple:
    """``(api.Quantized, summary dict)`` of a directory written by ``tvm-fxp quantize`` (its plan, its source
    model imported as ``quantize`` imported it), without calibrating again."""
    from . import api
    from .plan import Plan

    d = Path(d)
    for f in ("plan.json", "source.onnx"):
        if not (d / f).exists():
            raise DeployError(f"{d / f} is missing: is {d} the --out directory of `tvm-fxp quantize`?")
    prev = json.loads((d / "summary.json").read_text()) if (d / "summary.json").exists() else {}
    prepared, lg = api.load_model(d / "source.onnx", input_shape or prev.get("input_shape"),
                                  bool(prev.get("float_islands")), (prev.get("import") or {}).get("simplified", True))
    return api.bind_plan(prepared, lg, Plan.load(d / "plan.json")), prev


def read_build_info(d) -> dict:
    p = Path(d) / BUILD_INFO
    if not p.exists():
        raise DeployError(f"{p} is missing: is {d} a directory written by `tvm-fxp quantize` or `tvm-fxp compile`?")
    return json.loads(p.read_text())
