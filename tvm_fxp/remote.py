"""Run a built model on a board over TVM RPC: ``tvm-fxp run DIR --rpc HOST:PORT --data DATA``.

The board runs TVM's RPC server (``python3 -m tvm.exec.rpc_server --host 0.0.0.0 --port 9090``; only the
TVM runtime is needed there).  ``run_remote`` uploads ``DIR/model.so``, runs the data on the board in
batches, and compares with the host simulation of the same plan: top-1, agreement with the simulation,
``bit_exact``, and the board's latency at batch 1 (the remote ``time_evaluator``, median of repeats).  With
``--tracker HOST:PORT --key KEY`` the board is requested from TVM's RPC tracker.

Errors are ``RemoteError`` with what to do: an unreachable server, a board of another architecture than the
library (asked before the upload: ``board_arch`` reads the ELF header of the board's RPC server executable),
a library the board cannot load, or a library built for another target than the one ``build.json`` records.
"""

from __future__ import annotations

import json
import socket
import sys
import time
from pathlib import Path

import numpy as np
import tvm

from .deploy import DeployError, read_build_info

ELF_MACHINES = {0x3E: "x86_64", 0xB7: "aarch64", 0x28: "arm", 0x03: "x86"}
DIRECT_KEY = "tvm_fxp.direct"   # RPCConfig key meaning "connect to tracker_host:tracker_port directly"


class RemoteError(DeployError):
    """The board cannot be reached or cannot run the library; the message says what to do."""


def parse_address(text: str, option: str) -> tuple:
    host, sep, port = str(text).rpartition(":")
    if not sep or not host or not port.isdigit():
        raise RemoteError(f"{option} {text!r}: expected HOST:PORT, e.g. 192.168.1.20:9090")
    return host, int(port)


def connect(rpc: str | None = None, tracker: str | None = None, key: str | None = None,
            session_timeout: float = 0):
    """An RPC session: directly to ``rpc`` (HOST:PORT) or a board of ``key`` from ``tracker``."""
    from tvm import rpc as tvm_rpc

    if (rpc is None) == (tracker is None):
        raise RemoteError("give exactly one of --rpc HOST:PORT or --tracker HOST:PORT --key KEY")
    if tracker is not None:
        host, port = parse_address(tracker, "--tracker")
        if not key:
            raise RemoteError("--tracker needs --key KEY (the key the boards registered with)")
        _check_reachable(host, port, "RPC tracker", "python -m tvm.exec.rpc_tracker --host 0.0.0.0 --port 9190")
        try:
            return tvm_rpc.connect_tracker(host, port).request(key, priority=1, session_timeout=session_timeout)
        except Exception as e:  # noqa: BLE001 -- TVM raises RuntimeError/TVMError for every failure
            raise RemoteError(f"the RPC tracker at {host}:{port} gave no board for key {key!r}: "
                              f"{_first_line(e)}; list its boards with `python -m tvm.exec.query_rpc_tracker "
                              f"--host {host} --port {port}`") from None
    host, port = parse_address(rpc, "--rpc")
    _check_reachable(host, port, "RPC server", "python3 -m tvm.exec.rpc_server --host 0.0.0.0 --port 9090")
    try:
        return tvm_rpc.connect(host, port, session_timeout=session_timeout)
    except Exception as e:  # noqa: BLE001
        raise RemoteError(f"{host}:{port} accepted the connection but is not a TVM RPC server (or refused the "
                          f"session): {_first_line(e)}") from None


def session_from_config(rpc_config):
    """``f_create_session`` for MetaSchedule's RPC runner: direct when the key is ``DIRECT_KEY``."""
    from tvm import rpc as tvm_rpc

    if rpc_config.tracker_key == DIRECT_KEY:
        return tvm_rpc.connect(rpc_config.tracker_host, rpc_config.tracker_port,
                               session_timeout=rpc_config.session_timeout_sec)
    return rpc_config.connect_server()


def _first_line(e) -> str:
    text = str(e).strip()
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else type(e).__name__


def _check_reachable(host: str, port: int, what: str, start: str, timeout: float = 5.0) -> None:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as e:
        raise RemoteError(f"cannot reach the {what} at {host}:{port} ({e.strerror or e}): is it running and "
                          f"reachable from here? On the board: `{start}`") from None


def elf_arch(path) -> str | None:
    """The architecture in a shared library's ELF header, or None when it is not ELF."""
    return elf_header_arch(Path(path).read_bytes()[:20])


def elf_header_arch(head: bytes) -> str | None:
    """The architecture an ELF header names (``e_machine``, in the header's byte order), or None."""
    if len(head) < 20 or head[:4] != b"\x7fELF":
        return None
    machine = int.from_bytes(head[18:20], "little" if head[5] == 1 else "big")
    return ELF_MACHINES.get(machine, f"machine 0x{machine:x}")


def board_arch(session) -> str | None:
    """The board's architecture, asked before anything is uploaded: the ELF header of the executable serving
    the session (``/proc/self/exe`` on Linux: the board's Python, also under qemu-user, which maps it to the
    emulated program).  None when the board does not say (not Linux, or a server that refuses the path)."""
    try:
        return elf_header_arch(bytes(session.download("/proc/self/exe"))[:20])
    except Exception:  # noqa: BLE001 -- an RPC server without that file: the load error names the architecture
        return None


def check_board(session, info: dict, where: str) -> None:
    """A clear error when the board is of another architecture than the library in ``info``."""
    arch = board_arch(session)
    if arch is not None and arch != info["arch"]:
        raise RemoteError(f"the board at {where} is {arch}, but the library is built for {info['arch']} "
                          f"({info['preset']}): rebuild for the board with `tvm-fxp compile DIR --target "
                          f"{'rpi4' if arch == 'aarch64' else '<its preset or target dict>'} --out DIR2`")


def check_library(d: Path) -> dict:
    """``build.json`` of ``d`` after checking ``model.so`` is what it records."""
    info = read_build_info(d)
    lib = d / info.get("library", "model.so")
    if not lib.exists():
        raise RemoteError(f"{lib} is missing: build it with `tvm-fxp compile {d} --target rpi4 --out {d}`")
    arch = elf_arch(lib)
    if arch is not None and arch != info["arch"]:
        raise RemoteError(f"{lib} is an {arch} library but {d / 'build.json'} records a build for {info['arch']} "
                          f"({info['preset']}): rebuild with `tvm-fxp compile {d} --target {info['preset']} --out {d}`")
    return info


def load_remote(session, lib: Path, info: dict):
    """Upload and load ``lib`` on the board; a clear error when the board cannot load it."""
    name = f"tvm_fxp_{int(time.time() * 1000)}_{lib.name}"
    session.upload(str(lib), name)
    try:
        return session.load_module(name)
    except Exception as e:  # noqa: BLE001
        msg = _first_line(e)
        hint = ""
        if any(s in msg for s in ("wrong ELF class", "cannot open shared object", "ELF", "exec format")):
            hint = (f"; the library is built for {info['arch']} ({info['preset']}): is the board another "
                    f"architecture? Rebuild with `tvm-fxp compile DIR --target <the board's preset or target "
                    f"dict> --out DIR2`")
        raise RemoteError(f"the board could not load {lib.name}: {msg}{hint}") from None


def invoke_main(vm, dev, xs) -> list | np.ndarray:
    """``main`` of ``vm`` on the numpy inputs ``xs``, its result as numpy (a list for a tuple).  Through
    set_input/invoke_stateful/get_outputs: a tuple result of a remote call is an opaque RPC handle."""
    def fetch(out):
        return [fetch(o) for o in out] if isinstance(out, (list, tuple)) else out.numpy()

    vm.set_input("main", *[tvm.runtime.tensor(x, dev) for x in xs])
    vm.invoke_stateful("main")
    return fetch(vm.get_outputs("main"))


def run_remote(d, inputs, rpc: str | None = None, tracker: str | None = None, key: str | None = None,
               batch_size: int = 64, repeat: int = 11, number: int = 10, progress: bool = True,
               batch: int | None = None) -> dict:
    """Outputs of ``d/model.so`` on the board for ``inputs`` and its latency (remote median) at batch 1, or
    at the model's fixed ``batch`` (``Quantized.batch``; the inputs then run in chunks of it).

    ``inputs``: an array, or a list of arrays, one per model input (in the model's order); ``outputs``: an
    array, or a list of arrays for a model with several outputs."""
    from tqdm.auto import tqdm
    from tvm import relax

    from .batching import Batching, concat, padded_chunks, trim

    d = Path(d)
    info = check_library(d)
    session = connect(rpc, tracker, key)
    check_board(session, info, rpc or f"a {key!r} board of the tracker {tracker}")
    rlib = load_remote(session, d / info.get("library", "model.so"), info)
    dev = session.cpu()
    vm = relax.VirtualMachine(rlib, dev)
    arrays = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]

    parts = []
    with tqdm(total=len(arrays[0]), desc="board", unit="input", disable=not progress) as bar:
        for start, stop, xs in padded_chunks(arrays, Batching(batch, batch_size)):
            parts.append(trim(invoke_main(vm, dev, xs), stop - start, len(xs[0])))
            bar.update(stop - start)
    outs = concat(parts)
    first = [Batching(batch, 1).pad(np.ascontiguousarray(a[:1], dtype=np.float32)) for a in arrays]
    timer = vm.time_evaluator("main", dev, number=number, repeat=repeat)
    times = np.array(timer(*[tvm.runtime.tensor(x, dev) for x in first]).results)
    return {"outputs": outs, "latency_ms": float(np.median(times) * 1e3), "latency_batch": int(len(first[0])),
            "latency_repeats": int(repeat), "build": info}


def cmd_run(args) -> dict:
    from . import api
    from .data import count, load_data, preprocess_from_summary
    from .deploy import load_quantized_dir
    from .report import agreement, top1

    t0 = time.time()
    d = Path(args.dir)
    q, prev = load_quantized_dir(d, args.input_shape)
    plan = q.plan
    preprocess_from_summary(args, prev)
    data = load_data(args.data, q.graph, "eval", args.eval_size, args.seed, args)
    print(f"running {count(data.inputs)} inputs ({data.source}) on "
          f"{args.rpc or f'a {args.key!r} board of {args.tracker}'}", file=sys.stderr)
    res = run_remote(d, data.inputs, args.rpc, args.tracker, args.key, min(args.batch_size, 64),
                     args.repeat, progress=not args.quiet, batch=q.batch)
    sim = api.Runner(api.build(q.simulated()), batch=q.batch).run(data.inputs, args.batch_size)
    board = res["outputs"]
    # several outputs (detection heads): each compared on its own; top-1/agreement only mean something for one
    sims, boards = (sim, board) if isinstance(board, list) else ([sim], [board])
    single = len(boards) == 1
    summary = {"model": plan.model.get("name", "source.onnx"), "method": plan.method,
               "target": res["build"]["preset"], "arch": res["build"]["arch"],
               "board": args.rpc or f"tracker {args.tracker} key {args.key}",
               "fxp_top1": top1(board, data.labels) if single else None,
               "agreement_with_simulation": agreement(sim, board) if single else None,
               "bit_exact": all(bool(np.array_equal(s, b)) for s, b in zip(sims, boards)),
               "bit_exact_per_output": {name: bool(np.array_equal(s, b))
                                        for name, s, b in zip(q.graph.outputs, sims, boards)},
               "latency_ms": round(res["latency_ms"], 4),
               "latency": f"batch {res['latency_batch']}, median of {res['latency_repeats']} remote "
                          "time_evaluator repeats",
               "evaluated_inputs": count(data.inputs), "data_source": data.source,
               "wall_s": round(time.time() - t0, 2)}
    (d / "run.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def add_run_parser(sub, common) -> None:
    r = sub.add_parser("run", parents=[common], help="run DIR/model.so on a board over TVM RPC")
    r.add_argument("dir")
    r.add_argument("--data", required=True, help="fashion-mnist | synthetic | FILE.npz")
    r.add_argument("--rpc", default=None, help="HOST:PORT of the board's TVM RPC server")
    r.add_argument("--tracker", default=None, help="HOST:PORT of a TVM RPC tracker (with --key)")
    r.add_argument("--key", default=None, help="device key the boards registered with at the tracker")
    r.add_argument("--repeat", type=int, default=11, help="latency: repeats of the remote time_evaluator")
