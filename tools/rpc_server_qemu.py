"""A TVM RPC server for an emulated board: run by the aarch64 Python under qemu-user (``tools.emulation``).

    qemu-aarch64-static -L SYSROOT SYSROOT/usr/bin/python3.11 rpc_server_qemu.py --port 9090 [--tracker H:P --key K]

On a real Pi the server is TVM's own ``python3 -m tvm.exec.rpc_server``.  That module starts the server in a
``PopenWorker``, i.e. it executes ``sys.executable`` again, which qemu-user cannot do without binfmt_misc
(often unavailable in containers and CI).  This script runs the same server state
(``tvm.rpc.server.PopenRPCServerState``: the listen loop, the tracker registration, one forked process per
session) in this process instead; fork needs no exec, so it works under qemu-user.  It imports nothing but
the TVM runtime (no tvm-fxp, no compiler), as on the board.
"""

import argparse
import logging
import sys

import tvm  # noqa: F401 -- first: loading tvm_ffi alone crashed on parallel kernels (ARM.md)
from tvm.rpc import server


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=9090)
    p.add_argument("--port-end", type=int, default=9199)
    p.add_argument("--tracker", default=None, help="HOST:PORT of an RPC tracker to register with")
    p.add_argument("--key", default="")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stdout, format="%(name)s %(message)s")
    logging.getLogger("RPCServer").setLevel(logging.INFO)     # one "connected from" line per session
    tracker = None
    if args.tracker:
        host, port = args.tracker.rsplit(":", 1)
        tracker = (host, int(port))
    state = server.PopenRPCServerState(args.host, args.port, args.port_end, tracker_addr=tracker, key=args.key,
                                       custom_addr=args.host if tracker else None)
    print(f"tvm_fxp rpc server listening on {args.host}:{state.port}", flush=True)
    sys.stdout.flush()
    state.thread.join()


if __name__ == "__main__":
    main()
