"""``tvm-fxp tune``: the design space of our kernels (the default schedule is one point of it, every point
keeps the plan's accumulator and gives the same integers), host tuning with the local runner, and rpi4
tuning through TVM's RPC tracker with two emulated boards under one key; tuned builds bit-exact.

Tiny trial counts and a two-kernel model keep this quick; long runs are bench/tune.py."""

import json
from pathlib import Path

import numpy as np
import pytest
import tvm

from deploy_helpers import require_emulation, tiny_cnn
from tvm_fxp import cli, deploy, tune
from tools.emulation import EmulatedBoard, RPCTracker
from tvm_fxp.schedules import conv2d_int, conv2d_vnni, dense_int, tuning
from tvm_fxp.schedules.targets import kernel_config


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("tune")
    out = root / "tiny"
    assert cli.main(["quantize", str(tiny_cnn(root / "tiny.onnx")), "--calib", "synthetic", "--calib-size", "32",
                     "--eval-size", "64", "--accumulator", "narrow", "--quiet", "--out", str(out)]) == 0
    return out


def _quantized(d):
    q, summary = deploy.load_quantized_dir(d)
    return q, summary["accumulator_policy"]


def _run_kernel(func, args, target):
    lib = tvm.tirx.build(tvm.IRModule({"main": func}), target=target)
    tensors = [tvm.runtime.tensor(a) for a in args]
    lib(*tensors)
    return tensors[-1].numpy()


def _random_args(func, rng):
    args = []
    for p in func.params:
        shape, dtype = [int(s) for s in p.ty.shape], str(p.ty.dtype)
        hi = 8 if dtype in ("int8", "uint8") else 4
        args.append(rng.integers(0 if dtype.startswith("u") else -hi, hi, size=shape).astype(dtype))
    return args


@pytest.mark.parametrize("target_name", ["host", "rpi4"])
def test_design_space_contains_default_and_keeps_accumulators(tiny_dir, target_name):
    q, accumulator = _quantized(tiny_dir)
    target, _ = deploy.resolve_target(target_name)
    realized = q.realized(accumulator)
    tasks = tune.extract_tasks(realized, target)
    # every kernel is a task but the paired gemmlowp/ruy int32 kernels (aarch64, fixed schedule): the rpi4 build's
    # int32 dense (2304 -> 10, weights proving the int16 pair sums) is one, its int16 conv is tuned
    tuned = [ks[0]["op"].replace("matmul", "dense") for ks in deploy.layer_kernels(realized, target).values()
             if ks[0].get("layout") != "paired"]
    assert len(tuned) == (2 if target_name == "host" else 1)
    assert len(tasks) == len(tuned) and {t[0].split("_")[0] for t in tasks} == set(tuned)
    rng = np.random.default_rng(0)
    for name, workload, plan, _ in tasks:
        spaces = tuning.design_space(tvm.s_tir.Schedule(tvm.IRModule({"main": workload})))
        defaults = tuning.default_decisions(plan)       # initial decisions: the default schedule
        first = tuning.decisions_of(spaces[0].trace, plan)
        assert {k: first[k] for k in defaults} == defaults, name
        if tuning.kernel_kind(plan) == "conv2d_vnni":
            knobs = conv2d_vnni.default_knobs(plan)
            assert defaults == {"register_block": knobs.block, "spatial": knobs.shape, "oc_block": knobs.vectors}
        else:
            assert defaults["register_block"] == plan.block and defaults["k_unroll"] == 1
            if "vector_width" in defaults:
                assert defaults["vector_width"] == plan.lanes
        if target_name != "host":
            continue
        args = _random_args(workload, rng)
        default = {"conv2d": conv2d_int.schedule_conv2d, "conv2d_vnni": conv2d_vnni.schedule,
                   "dense": dense_int.schedule_dense}[tuning.kernel_kind(plan)](workload, plan)
        expected = _run_kernel(default, args, target)
        for space in spaces:                      # every sketch, 3 random points each: the same integers
            for seed in (1, 2, 3):
                sch = tvm.s_tir.Schedule(tvm.IRModule({"main": workload}), seed=seed)
                space.trace.apply_to_schedule(sch, remove_postproc=True, decision_provider=None)
                func = sch.mod["main"]
                got = _run_kernel(func, [a.copy() for a in args[:-1]] + [np.zeros_like(args[-1])], target)
                np.testing.assert_array_equal(got, expected)
                if tuning.kernel_kind(plan) == "conv2d_vnni":    # the report names the sampled point
                    got = tuning.decisions_of(sch.trace, plan)
                    assert (got["spatial"], got["oc_block"]) in tuning.vnni_sketches(plan)
                    assert got["register_block"] in tuning.vnni_blocks(plan, got["spatial"], got["oc_block"])[0]
                acc = [b for b in func.script().splitlines() if "_local = T.alloc_buffer" in b or "local" in b]
                assert any(plan.acc_dtype in line for line in acc), name   # the proven accumulator dtype


@pytest.mark.slow   # the default run tunes through the tracker (rpi4) and checks that tuned build bit-exact
def test_host_tune_then_build_bit_exact(tiny_dir, capsys):
    assert cli.main(["tune", str(tiny_dir), "--target", "host", "--trials", "4", "--confirm-rounds", "1",
                     "--quiet"]) == 0
    report = json.loads((tiny_dir / "tuning" / "tune.json").read_text())
    assert report["tasks"] == 2 and report["measured"] == 4 and report["errors"] == 0
    for kernel in report["kernels"].values():
        assert kernel["default_ms"] > 0 and kernel["best_ms"] <= kernel["default_ms"]   # the default is a record
    assert report["kernel_speedup"] >= 1.0
    out = tiny_dir.parent / "tuned"
    assert cli.main(["compile", str(tiny_dir), "--tuning-db", str(tiny_dir / "tuning"), "--out", str(out)]) == 0
    info = json.loads((out / "build.json").read_text())["tuning_db"]
    assert info["kernels_from_db"] == 2
    check = report["model_check"]
    assert check["bit_exact"] and check["timed"] and check["kept"] == (check["speedup"] > 1.0)
    capsys.readouterr()
    assert cli.main(["evaluate", str(out), "--data", "synthetic", "--eval-size", "64", "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out)["bit_exact"] is True


def _host_vnni():
    host, _ = deploy.resolve_target("host")
    if not kernel_config(host, "int32").vnni:
        pytest.skip("the blocked VNNI kernels need an AVX-512 VNNI host")
    return host


def test_vnni_space_starts_at_the_default_schedule_of_the_reference_models():
    """Every VNNI conv of both reference models (blocked NCHW16c activations on one side at least) is a task,
    and its design space's first point is the default schedule, structurally."""
    import tvm_fxp
    from tvm_fxp.plan import Plan

    host = _host_vnni()
    root = Path(__file__).resolve().parents[2]
    count = 0
    for name in ("fmnist_vgg", "fmnist_resnet"):
        prepared, lg = tvm_fxp.load_model(root / "examples" / "models" / f"{name}.onnx")
        plan_file = root / "bench" / "results" / "plans" / f"{name}_debruin2020_untiled.json"
        q = tvm_fxp.bind_plan(prepared, lg, Plan.load(plan_file))
        for task, workload, plan, _ in tune.extract_tasks(q.realized("narrow"), host):
            if tuning.kernel_kind(plan) != "conv2d_vnni":
                continue
            assert "NCHW16c" in (plan.data_layout, plan.out_layout), task
            first = tuning.design_space(tvm.s_tir.Schedule(tvm.IRModule({"main": workload})))[0]
            tvm.ir.assert_structural_equal(first.mod["main"], conv2d_vnni.schedule(workload, plan))
            count += 1
    assert count == 12     # vgg 4, resnet 8


def test_tuned_build_keeps_the_blocked_layout_and_is_bit_exact(tmp_path, capsys):
    host = _host_vnni()
    d = tmp_path / "two"
    assert cli.main(["quantize", str(tiny_cnn(tmp_path / "two.onnx", convs=2)), "--calib", "synthetic",
                     "--calib-size", "32", "--eval-size", "32", "--accumulator", "narrow", "--quiet",
                     "--out", str(d)]) == 0
    q, accumulator = _quantized(d)
    tasks = tune.extract_tasks(q.realized(accumulator), host)
    blocked = [plan for _, _, plan, _ in tasks if getattr(plan, "out_layout", "NCHW") == "NCHW16c"]
    assert len(tasks) == 3 and len(blocked) == 1          # conv 1 -> 16 writes NCHW16c, conv 16 -> 16 reads it
    assert cli.main(["tune", str(d), "--target", "host", "--trials", "2", "--confirm-rounds", "1", "--quiet"]) == 0
    report = json.loads((d / "tuning" / "tune.json").read_text())
    check = report["model_check"]
    assert check["bit_exact"] and check["timed"] and check["kept"] == (check["speedup"] > 1.0)
    assert check["kernels_from_db"] == 3 and check["default_us"] > 0
    out = tmp_path / "tuned"
    assert cli.main(["compile", str(d), "--tuning-db", str(d / "tuning"), "--out", str(out)]) == 0
    assert json.loads((out / "build.json").read_text())["tuning_db"]["kernels_from_db"] == 3
    capsys.readouterr()
    assert cli.main(["evaluate", str(out), "--data", "synthetic", "--eval-size", "32", "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out)["bit_exact"] is True


def test_records_dropped_by_the_model_check_leave_the_default_schedules(tiny_dir, tmp_path):
    """When the whole model is not faster, ``tune`` rewrites its database with each kernel's default schedule
    (``_keep_defaults``): a build with it takes every kernel from the database, scheduled as by default."""
    from tvm.s_tir import meta_schedule as ms

    q, accumulator = _quantized(tiny_dir)
    host, _ = deploy.resolve_target("host")
    realized = q.realized(accumulator)
    tasks = tune.extract_tasks(realized, host)
    (tmp_path / "database_workload.json").write_text("stale\n")      # replaced, not appended to
    tune._keep_defaults(tasks, host, tmp_path, {name: 1e-6 * (i + 1) for i, (name, *_) in enumerate(tasks)})
    db = ms.database.JSONDatabase(work_dir=str(tmp_path), module_equality="structural")
    for i, (name, workload, plan, _) in enumerate(tasks):
        (record,) = db.get_top_k(db.commit_workload(tvm.IRModule({"main": workload})), 2)
        assert [float(t) for t in record.run_secs] == [pytest.approx(1e-6 * (i + 1))]
        sch = tvm.s_tir.Schedule(tvm.IRModule({"main": workload}))
        record.trace.apply_to_schedule(sch, remove_postproc=False)
        default = tune._default_schedule(workload)
        tvm.ir.assert_structural_equal(sch.mod["main"], default.mod["main"])
    _, from_db = deploy.build(realized, host, tmp_path)
    assert from_db == len(tasks)


def test_tune_errors_are_clear(tiny_dir, capsys):
    assert cli.main(["tune", str(tiny_dir), "--target", "rpi4", "--quiet"]) == 2
    assert "needs a board: give --rpc HOST:PORT or --tracker HOST:PORT --key KEY" in capsys.readouterr().err
    assert cli.main(["tune", str(tiny_dir), "--target", "rpi4", "--tracker", "127.0.0.1:1", "--key", "rpi4",
                     "--quiet"]) == 2
    assert "cannot reach the RPC tracker at 127.0.0.1:1" in capsys.readouterr().err
    assert cli.main(["compile", str(tiny_dir), "--tuning-db", str(tiny_dir), "--out", str(tiny_dir / "x")]) == 2
    assert "is not a tuning database" in capsys.readouterr().err


@pytest.mark.slow
def test_time_limit_stops_the_search(tiny_dir, tmp_path):
    q, accumulator = _quantized(tiny_dir)
    report = tune.tune(q.realized(accumulator), "host", tmp_path / "db", trials=200, time_limit=1.0, progress=False)
    assert report["stopped_by_time_limit"] and report["measured"] < 200


@pytest.fixture(scope="module")
def two_boards():
    """A tracker on 127.0.0.1 and two emulated boards registered under key 'rpi4'; all stopped after."""
    require_emulation()
    tracker = RPCTracker()
    boards = []
    try:
        boards = [EmulatedBoard(tracker=tracker.address, key="rpi4", wait=False) for _ in range(2)]
        for b in boards:
            b.wait()
        tracker.wait_for("rpi4", 2)
        yield tracker, boards
    finally:
        for b in boards:
            b.close()
        tracker.close()


@pytest.mark.slow   # ~50 s: two emulated boards; the rpi4 RPC run (test_remote) stays in the default suite
def test_rpi4_tuning_through_tracker_reaches_both_boards(tiny_dir, two_boards, capsys):
    tracker, boards = two_boards
    db = tiny_dir / "tuning_rpi4"
    assert cli.main(["tune", str(tiny_dir), "--target", "rpi4", "--tracker", tracker.address, "--key", "rpi4",
                     "--trials", "2", "--confirm-rounds", "1", "--out", str(db), "--quiet"]) == 0
    report = json.loads((db / "tune.json").read_text())
    assert report["errors"] == 0 and report["measured"] == 2 and report["workers"] == 2
    assert all(b.sessions >= 1 for b in boards), [b.sessions for b in boards]   # both boards measured
    pi = tiny_dir.parent / "pi_tuned"
    assert cli.main(["compile", str(tiny_dir), "--target", "rpi4", "--tuning-db", str(db), "--out", str(pi)]) == 0
    info = json.loads((pi / "build.json").read_text())["tuning_db"]
    # every tuned task is built from the database (the Pi's paired int32 kernels have a fixed schedule: no task)
    assert info["kernels_from_db"] == report["tasks"] >= 1
    check = report["model_check"]       # outputs compared on the board, no timing under qemu
    assert check["bit_exact"] and check["kept"] and not check["timed"]
    capsys.readouterr()
    assert cli.main(["run", str(pi), "--tracker", tracker.address, "--key", "rpi4", "--data", "synthetic",
                     "--eval-size", "32", "--repeat", "2", "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out)["bit_exact"] is True
