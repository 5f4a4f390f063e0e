"""``tvm-fxp tune DIR``: MetaSchedule over our integer kernels' design space, measured on the host or a board.

    tvm-fxp tune DIR --target host --trials 64 --time-limit 300
    tvm-fxp tune DIR --target rpi4 --rpc 192.168.1.20:9090 --trials 64
    tvm-fxp tune DIR --target rpi4 --tracker 127.0.0.1:9190 --key rpi4 --trials 256

Tasks are the kernels the build of DIR's plan uses on the target (``schedules.tuning.collect`` records their
workloads, batch 1); each is tuned in ``schedules.tuning.design_space`` (our schedule's knobs as sampled
decisions, never TVM's generic rules, so every candidate keeps the plan's accumulator dtype).  The search
strategy replays the design space's traces with fresh decisions (``ReplayTrace``; the spaces are small and
discrete).  Before the search, the default schedule of every kernel is measured and recorded, so a tuned
build is never slower than the default by more than noise, and the report gives each kernel's speed-up.

Measurements: host -> MetaSchedule's local runner; ``--rpc`` -> its RPC runner on that server; ``--tracker``
-> its RPC runner through TVM's RPC tracker, which hands each measurement to a free board registered under
the key (that is how tuning scales past one board).  Libraries for aarch64 are cross-compiled by the
builder (``in_process_builder``).

The search's records go to MetaSchedule's JSON database in ``DIR/tuning/search/`` (appended as they are
measured, so an interrupt keeps what was measured).  The search keeps the minimum of noisy timings, which
favours lucky candidates, so each kernel's default and best few candidates are then measured again side by
side, and the winner is the one record per kernel of ``DIR/tuning/`` (``tvm-fxp compile``/``quantize
--tuning-db DIR/tuning`` build with it; ``tune.json`` there reports the confirmed times).
Last, the whole model (``model_check``): the default build and the build with that database are compared on
random inputs (bit for bit) and, on the host, timed interleaved at batch 1; the records are kept only if the
tuned model is faster (a kernel faster alone can be slower in the fused model: caches, code size), else the
database is rewritten with the default schedules.  With ``--rpc``/``--tracker`` only the outputs are compared,
on the board (an emulated board's timings mean nothing).
``--time-limit`` stops every task once the limit has passed (checked after each batch of measurements);
``--trials`` bounds the measurements of the search over all kernels.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import tvm
import tvm_ffi

from .deploy import DeployError, resolve_target, runs_on_host


def in_process_builder():
    """A MetaSchedule builder that compiles in this process (``tvm.tirx.build``) and links a shared library
    with the target's toolchain (the host compiler, or the cross compiler: the board needs no compiler).

    MetaSchedule's ``LocalBuilder`` starts a fresh worker pool for every batch of candidates (a Python that
    imports TVM: seconds each, most of a small tuning run on a loaded 2-core machine); our kernels are ours,
    built the same way by every build, so the isolation buys nothing here."""
    import tempfile

    from tvm.ir.utils import derived_object
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.meta_schedule.builder import BuilderResult

    from .deploy import fcompile_for

    @derived_object
    class InProcessBuilder(ms.builder.PyBuilder):
        def build(self, build_inputs):
            results = []
            for inp in build_inputs:
                try:
                    lib = tvm.tirx.build(inp.mod, target=inp.target)
                    path = Path(tempfile.mkdtemp(prefix="tvm_fxp_tune_")) / "kernel.so"
                    fcompile = fcompile_for(inp.target)
                    if fcompile is None:
                        lib.export_library(str(path))
                    else:
                        lib.export_library(str(path), fcompile=fcompile)
                    results.append(BuilderResult(str(path), None))
                except Exception as e:  # noqa: BLE001 -- a candidate that does not build is a measured failure
                    results.append(BuilderResult(None, f"{type(e).__name__}: {e}"[-2000:]))
            return results

    return InProcessBuilder()


def alloc_random_arguments(session, device, args_info, alloc_repeat):
    """MetaSchedule runner ``f_alloc_argument`` that needs no ``tvm.contrib.random`` on the board: random
    integers made here (numpy) and copied to the board."""
    rng = np.random.default_rng(0)
    out = []
    for _ in range(alloc_repeat):
        args = []
        for info in args_info:
            _, dtype, shape = info
            if "float" in dtype:
                value = rng.standard_normal(shape).astype(dtype)
            else:
                bits = int("".join(c for c in dtype if c.isdigit()) or 8)
                hi = 2 ** min(bits - 1, 6)      # small integers: shifts and saturations stay in range
                value = rng.integers(-hi if dtype.startswith("int") else 0, hi, size=shape).astype(dtype)
            args.append(tvm.runtime.tensor(value, device))
        out.append(args)
    return out


def extract_tasks(realized: tvm.IRModule, target) -> list:
    """``[(name, workload, plan)]``: the distinct kernel workloads of building ``realized`` for ``target``."""
    from . import api
    from .schedules import tuning

    with tuning.collect() as collected:
        api.build(realized, target)
    tasks, seen = [], {}
    for kind, workload, plan in collected:
        key = tvm_ffi.structural_hash(workload)
        if key in seen:
            tasks[seen[key]][3] += 1
            continue
        seen[key] = len(tasks)
        tasks.append([f"{kind}_{len(tasks)}", workload, plan, 1])
    return [tuple(t) for t in tasks]


def _make_measurer(target, rpc, tracker, key, repeat, timeout):
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.meta_schedule.runner import EvaluatorConfig, RPCConfig

    from . import remote

    if runs_on_host(target) and rpc is None and tracker is None:
        evaluator = EvaluatorConfig(number=10, repeat=repeat, min_repeat_ms=20, enable_cpu_cache_flush=False)
        return in_process_builder(), ms.runner.LocalRunner(evaluator_config=evaluator), 1
    if rpc is None and tracker is None:
        raise DeployError(f"measuring for {target_name(target)} needs a board: give --rpc HOST:PORT or "
                          "--tracker HOST:PORT --key KEY")
    if tracker is not None:
        host, port = remote.parse_address(tracker, "--tracker")
        if not key:
            raise DeployError("--tracker needs --key KEY (the key the boards registered with)")
        remote._check_reachable(host, port, "RPC tracker", "python -m tvm.exec.rpc_tracker --host 0.0.0.0 --port 9190")
        config = RPCConfig(tracker_host=host, tracker_port=port, tracker_key=key, session_priority=1,
                           session_timeout_sec=int(timeout))
        from tvm import rpc as tvm_rpc

        queue = tvm_rpc.connect_tracker(host, port).summary().get("queue_info", {}).get(key, {})
        workers = max(1, int(queue.get("free", 0)) + int(queue.get("pending", 0)))
        if not queue:
            raise DeployError(f"no board is registered under key {key!r} at the tracker {tracker}")
    else:
        host, port = remote.parse_address(rpc, "--rpc")
        remote._check_reachable(host, port, "RPC server", "python3 -m tvm.exec.rpc_server --host 0.0.0.0 --port 9090")
        config = RPCConfig(tracker_host=host, tracker_port=port, tracker_key=remote.DIRECT_KEY, session_priority=1,
                           session_timeout_sec=int(timeout))
        workers = 1
    from .deploy import target_arch

    # one session first: a board of another architecture is named now, not as every measurement failing
    remote.check_board(remote.connect(rpc, tracker, key), {"arch": target_arch(target), "preset": target_name(target)},
                       rpc or f"a {key!r} board of the tracker {tracker}")
    evaluator = EvaluatorConfig(number=3, repeat=repeat, min_repeat_ms=0, enable_cpu_cache_flush=False)
    builder = in_process_builder()
    runner = ms.runner.RPCRunner(rpc_config=config, evaluator_config=evaluator, max_workers=workers,
                                 f_create_session=remote.session_from_config,
                                 f_alloc_argument=alloc_random_arguments)
    return builder, runner, workers


def target_name(target) -> str:
    return json.dumps({k: v for k, v in target.export().items() if k in ("kind", "mtriple", "mcpu")})


def _default_schedule(workload):
    """Today's schedule of a workload: the first sketch of the design space at its initial decisions."""
    from .schedules import tuning

    return tuning.design_space(tvm.s_tir.Schedule(tvm.IRModule({"main": workload})))[0]


def _replay(workload, trace):
    sch = tvm.s_tir.Schedule(tvm.IRModule({"main": workload}))
    trace.apply_to_schedule(sch, remove_postproc=False)
    return sch


def _measure(schedules, target, builder, runner, rounds: int = 1) -> list:
    """Median seconds of each schedule, measured ``rounds`` times in a rotating interleaved order (so load
    changes hit all candidates alike); None for a candidate that fails to build or run."""
    from tvm.s_tir.meta_schedule.arg_info import ArgInfo
    from tvm.s_tir.meta_schedule.builder import BuilderInput
    from tvm.s_tir.meta_schedule.runner import RunnerInput

    built = builder.build([BuilderInput(s.mod, target) for s in schedules])
    ok = [i for i, b in enumerate(built) if not b.error_msg]
    order = []
    for r in range(rounds):
        k = r % max(1, len(ok))
        order += ok[k:] + ok[:k]
    inputs = [RunnerInput(built[i].artifact_path, "cpu", ArgInfo.from_prim_func(schedules[i].mod["main"]))
              for i in order]
    samples: dict = {i: [] for i in ok}
    for i, fut in zip(order, runner.run(inputs)):
        res = fut.result()
        if not res.error_msg:
            samples[i].append(float(np.median([float(x) for x in res.run_secs])))
    return [float(np.median(samples[i])) if samples.get(i) else None for i in range(len(schedules))]


def _commit(database, workload, sch, secs: float, target) -> None:
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.meta_schedule.arg_info import ArgInfo

    wl = database.commit_workload(tvm.IRModule({"main": workload}))
    database.commit_tuning_record(ms.database.TuningRecord(
        sch.trace, wl, [secs], target, ArgInfo.from_prim_func(sch.mod["main"])))


def _confirm(tasks, target, builder, runner, search_db, final_db, top_k: int, rounds: int) -> dict:
    """Re-measure, per kernel, today's schedule and the ``top_k`` best candidates of the search side by side
    (``rounds`` interleaved rounds) and commit the fastest to ``final_db``: the minimum over a noisy search
    favours lucky timings; this keeps a candidate only if it is faster next to the default.
    ``{task: (default s, best s, best schedule)}``."""
    out = {}
    for name, workload, plan, _ in tasks:
        default = _default_schedule(workload)
        wl = search_db.commit_workload(tvm.IRModule({"main": workload}))
        candidates = [default]
        for rec in search_db.get_top_k(wl, top_k + 1):
            if not tvm_ffi.structural_equal(rec.trace.as_json(), default.trace.as_json()):
                candidates.append(_replay(workload, rec.trace))
        candidates = candidates[:top_k + 1]
        secs = _measure(candidates, target, builder, runner, rounds)
        if secs[0] is None:
            raise DeployError(f"the default schedule of {name} does not run on the target")
        best = min((i for i in range(len(candidates)) if secs[i] is not None), key=lambda i: secs[i])
        _commit(final_db, workload, candidates[best], secs[best], target)
        out[name] = (secs[0], secs[best], candidates[best])
    return out


def _model_inputs(realized: tvm.IRModule, count: int, seed: int = 0) -> list:
    """``count`` random batch-1 inputs of ``realized``'s ``main`` (floats in [0, 1), like images)."""
    rng = np.random.default_rng(seed)
    shapes = []
    for p in realized["main"].params:
        shape = [1 if not isinstance(d, tvm.tirx.IntImm) else int(d) for d in p.ty.shape]
        shapes.append((shape, str(p.ty.dtype)))
    return [[rng.random(shape).astype(dtype) for shape, dtype in shapes] for _ in range(count)]


def _same(a, b) -> bool:
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return np.array_equal(a, b)


def model_check(realized: tvm.IRModule, target, database_dir, rpc=None, tracker=None, key=None,
                rounds: int = 7, images: int = 4) -> dict:
    """The whole model built with the default schedules and with the database in ``database_dir``: outputs
    compared on ``images`` random inputs (``bit_exact``), and on the host (no ``rpc``/``tracker``) both
    timed at batch 1 in ``rounds`` interleaved rounds (VM ``time_evaluator``, each sample ~50 ms; medians):
    ``speedup`` = default / tuned.  On a board (qemu or real) only the outputs are compared there."""
    from tvm import relax

    from . import api, remote
    from .deploy import build as build_tuned, export_library, target_arch

    default = api.build(realized, target)
    tuned, from_db = build_tuned(realized, target, database_dir)
    inputs = _model_inputs(realized, images)
    out = {"kernels_from_db": from_db, "images": images}
    if rpc is None and tracker is None:
        dev = tvm.cpu()
        vms = {k: relax.VirtualMachine(ex, dev) for k, ex in (("default", default), ("tuned", tuned))}
        outs = {k: [remote.invoke_main(vm, dev, xs) for xs in inputs] for k, vm in vms.items()}
        args = [tvm.runtime.tensor(x, dev) for x in inputs[0]]
        probe = vms["default"].time_evaluator("main", dev, number=20, repeat=1)(*args).mean
        number = max(1, int(0.05 / max(probe, 1e-7)))
        timers = {k: vm.time_evaluator("main", dev, number=number, repeat=1) for k, vm in vms.items()}
        samples = {k: [] for k in timers}
        for r in range(rounds):
            for k in (list(timers) if r % 2 else list(timers)[::-1]):
                samples[k].append(timers[k](*args).mean)
        med = {k: float(np.median(v)) for k, v in samples.items()}
        out.update(default_us=round(med["default"] * 1e6, 3), tuned_us=round(med["tuned"] * 1e6, 3),
                   speedup=round(med["default"] / med["tuned"], 3), rounds=rounds, timed=True)
    else:
        import tempfile

        session = remote.connect(rpc, tracker, key)
        dev = session.cpu()
        outs = {}
        with tempfile.TemporaryDirectory(prefix="tvm_fxp_check_") as tmp:
            for k, ex in (("default", default), ("tuned", tuned)):
                lib = export_library(ex, Path(tmp) / f"{k}.so", target)
                info = {"arch": target_arch(target), "preset": target_name(target)}
                vm = relax.VirtualMachine(remote.load_remote(session, lib, info), dev)
                outs[k] = [remote.invoke_main(vm, dev, xs) for xs in inputs]
        out.update(timed=False, note="measured on a board over RPC: only the outputs are compared (an "
                   "emulated board's timings mean nothing)")
    out["bit_exact"] = bool(_same(outs["default"], outs["tuned"]))
    return out


def _keep_defaults(tasks, target, database_dir, seconds: dict) -> None:
    """Rewrite the database in ``database_dir`` with each kernel's default schedule and its measured
    ``seconds[name]`` (the tuned build is then the default build)."""
    from tvm.s_tir import meta_schedule as ms

    for f in ("database_workload.json", "database_tuning_record.json"):
        (Path(database_dir) / f).unlink(missing_ok=True)
    db = ms.database.JSONDatabase(work_dir=str(database_dir), module_equality="structural")
    for name, workload, _, _ in tasks:
        _commit(db, workload, _default_schedule(workload), seconds[name], target)


class _NoIntrinsicLibrary:
    """Within this block, ``import tvm.s_tir.tensor_intrin`` is a no-op (unless it was imported before).

    ``ms.TuneContext`` imports that package for TVM's generic schedule rules: it parses ~250 TVMScript tensor
    intrinsics (CUDA, ARM, x86, ...) at import, each through ``inspect.stack()`` -- 60-200 s on this loaded
    2-core machine, most of a small tuning run.  Our design spaces use no rule and only our own intrinsics
    (``conv2d_vnni``, ``intrin_arm``, registered when those modules are imported)."""

    NAME = "tvm.s_tir.tensor_intrin"

    def __enter__(self):
        import types

        self.stub = None
        if self.NAME not in sys.modules:
            self.stub = sys.modules[self.NAME] = types.ModuleType(self.NAME)
        return self

    def __exit__(self, *exc):
        if self.stub is not None and sys.modules.get(self.NAME) is self.stub:
            del sys.modules[self.NAME]
        return False


def tune(realized: tvm.IRModule, target, work_dir, trials: int = 64, time_limit: float | None = None,
         rpc: str | None = None, tracker: str | None = None, key: str | None = None, repeat: int = 5,
         progress: bool = True, seed: int = 1, confirm_top_k: int = 3, confirm_rounds: int = 3,
         check_rounds: int = 7) -> dict:
    """Tune the kernels of ``realized`` on ``target``.  The search's records go to ``work_dir/search``; then
    each kernel's default and ``confirm_top_k`` best candidates are measured again side by side
    (``confirm_rounds`` interleaved rounds) and the fastest is the one record per kernel of the database in
    ``work_dir`` (what ``apply_database``/``--tuning-db`` use).  Returns a report (per kernel: default and
    best milliseconds of the confirmation, speed-up, decisions; measurement counts).

    Then the whole model (``model_check``): default and tuned builds compared on random inputs and, on the
    host, timed interleaved (``check_rounds``); the records are kept only if the tuned model is bit-exact
    with the default and (host) faster, else the database is rewritten with the default schedules
    (``model_check["kept"]``)."""
    from tqdm.auto import tqdm
    from tvm.s_tir import meta_schedule as ms
    from tvm.ir.utils import derived_object

    from .schedules import tuning

    if not isinstance(target, tvm.target.Target):
        target, _ = resolve_target(target)
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    builder, runner, workers = _make_measurer(target, rpc, tracker, key, repeat, timeout=max(60, (time_limit or 600)))
    tasks = extract_tasks(realized, target)
    if not tasks:
        raise DeployError("the model has no integer conv2d/matmul kernels of tvm-fxp on this target: nothing to tune")
    search_dir = work_dir / "search"
    search_dir.mkdir(exist_ok=True)
    database = ms.database.JSONDatabase(work_dir=str(search_dir), module_equality="structural")
    defaults = {}
    for (name, workload, _, _), sch, secs in zip(
            tasks, [_default_schedule(t[1]) for t in tasks],
            _measure([_default_schedule(t[1]) for t in tasks], target, builder, runner)):
        if secs is None:
            raise DeployError(f"the default schedule of {name} does not build or run on the target")
        _commit(database, workload, sch, secs, target)     # the default is a record: the search starts from it
        defaults[name] = secs
    bar = tqdm(total=trials, desc="tune", unit="trial", disable=not progress)
    deadline = None if time_limit is None else t0 + time_limit
    counts = {"measured": 0, "errors": 0, "stopped_by_time_limit": False}

    @derived_object
    class Progress(ms.measure_callback.PyMeasureCallback):
        def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results):
            counts["measured"] += len(runner_results)
            counts["errors"] += sum(1 for r in runner_results if r.error_msg)
            bar.update(len(runner_results))
            if deadline is not None and time.time() > deadline:
                counts["stopped_by_time_limit"] = True
                for i in range(len(tasks)):
                    task_scheduler.terminate_task(i)

    with _NoIntrinsicLibrary():
        contexts = [ms.TuneContext(
            tvm.IRModule({"main": workload}), target=target,
            space_generator=ms.space_generator.ScheduleFn(tuning.design_space, sch_rules=[], postprocs=[],
                                                          mutator_probs={}),
            search_strategy=ms.search_strategy.ReplayTrace(), task_name=name, rand_state=seed + i, num_threads=1)
            for i, (name, workload, _, _) in enumerate(tasks)]
    interrupted = False
    remaining = max(0, trials)
    try:
        if remaining:
            ms.tune.tune_tasks(
                tasks=contexts, task_weights=[float(n) for *_, n in tasks], work_dir=str(search_dir),
                max_trials_global=remaining,
                num_trials_per_iter=max(workers, min(16, -(-remaining // len(tasks)))),
                builder=builder, runner=runner, database=database, cost_model="random",
                measure_callbacks=[*ms.measure_callback.MeasureCallback.create("default"), Progress()],
                task_scheduler="round-robin")
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bar.close()
    final = ms.database.JSONDatabase(work_dir=str(work_dir), module_equality="structural")
    confirmed = _confirm(tasks, target, builder, runner, database, final, confirm_top_k, confirm_rounds)
    kernels = {}
    for name, workload, plan, uses in tasks:
        default_s, best_s, best = confirmed[name]
        kernels[name] = {"plan": json.loads(tuning.plan_json(plan)), "calls": uses,
                         "default_ms": round(default_s * 1e3, 5), "best_ms": round(best_s * 1e3, 5),
                         "speedup": round(default_s / best_s, 3),
                         "search_default_ms": round(defaults[name] * 1e3, 5),
                         "default_decisions": tuning.default_decisions(plan),
                         "best_decisions": tuning.decisions_of(best.trace, plan)}
    check = model_check(realized, target, work_dir, rpc, tracker, key, rounds=check_rounds)
    check["kept"] = check["bit_exact"] and (not check["timed"] or check["speedup"] > 1.0)
    if not check["kept"]:
        _keep_defaults(tasks, target, work_dir, {n: confirmed[n][0] for n in confirmed})
        if not check["bit_exact"]:
            raise DeployError("the tuned model's outputs differ from the default build's: the records are dropped "
                              f"(the database in {work_dir} now holds the default schedules); please report this")
    default_total = sum(kernels[n]["default_ms"] / 1e3 * u for n, _, _, u in tasks)
    best_total = sum(kernels[n]["best_ms"] / 1e3 * u for n, _, _, u in tasks)
    return {"target": target_name(target), "database": str(work_dir), "tasks": len(tasks),
            "trials": trials, "measured": counts["measured"], "errors": counts["errors"],
            "stopped_by_time_limit": counts["stopped_by_time_limit"], "interrupted": interrupted,
            "workers": workers, "kernels": kernels,
            "kernel_time_default_ms": round(default_total * 1e3, 4),
            "kernel_time_tuned_ms": round(best_total * 1e3, 4),
            "kernel_speedup": round(default_total / best_total, 3) if best_total else None,
            "model_check": check, "wall_s": round(time.time() - t0, 1)}


def cmd_tune(args) -> dict:
    from .deploy import load_quantized_dir

    d = Path(args.dir)
    q, prev = load_quantized_dir(d, args.input_shape)
    accumulator = args.accumulator or prev.get("accumulator_policy") or "wide"
    target, preset = resolve_target(args.target)
    out = Path(args.out) if args.out else d / "tuning"
    print(f"tuning the kernels of {d} for {preset} ({args.trials} trials"
          f"{f', {args.time_limit:g} s' if args.time_limit else ''}) into {out}", file=sys.stderr)
    report = tune(q.realized(accumulator), target, out, args.trials, args.time_limit, args.rpc, args.tracker,
                  args.key, progress=not args.quiet, confirm_rounds=args.confirm_rounds)
    report["preset"] = preset
    report["accumulator_policy"] = accumulator
    (out / "tune.json").write_text(json.dumps(report, indent=1) + "\n")
    if report["interrupted"]:
        print(f"interrupted: the {report['measured']} measurements so far are kept in {out}", file=sys.stderr)
    check = report["model_check"]
    whole = (f"whole model {check['default_us']} us -> {check['tuned_us']} us ({check['speedup']}x)"
             if check["timed"] else "whole model not timed on the board")
    print(f"kernels {report['kernel_time_default_ms']} ms -> {report['kernel_time_tuned_ms']} ms "
          f"({report['kernel_speedup']}x); {whole}, bit-exact {check['bit_exact']}; " +
          (f"build with `tvm-fxp compile {d} --target {args.target} --tuning-db {out} --out DIR2`"
           if check["kept"] else f"records not kept ({out} holds the default schedules)"), file=sys.stderr)
    return {k: report[k] for k in ("target", "database", "tasks", "trials", "measured", "errors",
                                   "stopped_by_time_limit", "interrupted", "kernel_time_default_ms",
                                   "kernel_time_tuned_ms", "kernel_speedup", "model_check", "wall_s")}


def add_tune_parser(sub, common) -> None:
    t = sub.add_parser("tune", parents=[common], help="autotune the kernels of DIR with MetaSchedule")
    t.add_argument("dir")
    t.add_argument("--target", default="host", help="host | rpi4 | rpi3 | a TVM target dict as JSON")
    t.add_argument("--trials", type=int, default=64, help="measurements over all kernels")
    t.add_argument("--time-limit", type=float, default=None, help="seconds; stops the search, keeps the records")
    t.add_argument("--rpc", default=None, help="HOST:PORT of a board's TVM RPC server (targets other than host)")
    t.add_argument("--tracker", default=None, help="HOST:PORT of a TVM RPC tracker (with --key)")
    t.add_argument("--key", default=None)
    t.add_argument("--accumulator", default=None, choices=["wide", "narrow"],
                   help="default: the policy DIR was quantized with")
    t.add_argument("--out", default=None, help="database directory (default DIR/tuning)")
    t.add_argument("--confirm-rounds", type=int, default=3,
                   help="interleaved re-measurements of each kernel's default and best candidates after the search")
