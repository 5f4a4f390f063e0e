"""Emulated Raspberry Pi boards on this machine: TVM RPC servers run by an aarch64 Python under qemu-user.

    with EmulatedBoard(port=9090) as board:          # 127.0.0.1:9090, a TVM RPC server on "aarch64"
        ...  tvm-fxp run DIR --rpc 127.0.0.1:9090 ...
    with RPCTracker() as tracker, EmulatedBoard(tracker=tracker.address, key="rpi4"), \\
            EmulatedBoard(tracker=tracker.address, key="rpi4"):
        ...  tvm-fxp tune DIR --target rpi4 --tracker 127.0.0.1:PORT --key rpi4 ...

The emulated runtime (sysroot with Python 3.11, aarch64 wheels of the TVM *runtime* and numpy) is prepared
by ``.ci/setup_arm.sh`` (cached in ``~/.cache/tvm-fxp-arm``; ``tools.arm_emulation`` finds it).
Servers bind to 127.0.0.1 only.  ``close()`` (and leaving the ``with``) kills the server's whole process
group: the server forks one process per session, so killing the parent alone would leave children behind.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

LOOPBACK = "127.0.0.1"
SERVER_SCRIPT = Path(__file__).with_name("rpc_server_qemu.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


class EmulatedBoard:
    """A TVM RPC server under qemu-aarch64 on 127.0.0.1 (``port``: a free one when None)."""

    def __init__(self, port: int | None = None, tracker: str | None = None, key: str = "",
                 startup_timeout: float = 180.0, wait: bool = True):
        from tools import arm_emulation

        emulator, why = arm_emulation.find()
        if emulator is None:
            raise RuntimeError(why)
        self.port = port or free_port()
        self.address = f"{LOOPBACK}:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "TVM_"))}
        env.update(QEMU_LD_PREFIX=str(emulator.sysroot), PYTHONPATH=str(emulator.site), TVM_USE_RUNTIME_LIB="1",
                   PYTHONNOUSERSITE="1", TVM_NUM_THREADS="1", PYTHONUNBUFFERED="1")
        cmd = [emulator.qemu, "-L", str(emulator.sysroot), str(emulator.python), str(SERVER_SCRIPT),
               "--host", LOOPBACK, "--port", str(self.port), "--port-end", str(self.port + 1)]
        if tracker:
            cmd += ["--tracker", tracker, "--key", key]
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     start_new_session=True)
        self.log: list = []
        self.startup_timeout = startup_timeout
        self._ready = threading.Event()

        def drain(stream, ready):
            for line in stream:
                self.log.append(line)
                if "listening on" in line:
                    ready.set()
            ready.set()

        threading.Thread(target=drain, args=(self.proc.stdout, self._ready), daemon=True).start()
        if wait:
            self.wait()

    def wait(self) -> "EmulatedBoard":
        """Block until the server listens (start-up under qemu takes ~10 s); raises if it died."""
        if not self._ready.wait(self.startup_timeout) or self.proc is None or self.proc.poll() is not None:
            out = "".join(self.log)[-2000:]
            self.close()
            raise RuntimeError(f"the emulated RPC server did not start on {self.address}:\n{out}")
        return self

    @property
    def sessions(self) -> int:
        """RPC sessions this board has served so far (the server logs one line per session)."""
        return sum("connected from" in line for line in self.log)

    def close(self) -> None:
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=30)
        self.proc = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 -- interpreter shutdown
            pass


class RPCTracker:
    """TVM's RPC tracker (``tvm.rpc.tracker.Tracker``) on 127.0.0.1, on the host."""

    def __init__(self, port: int | None = None):
        from tvm.rpc.tracker import Tracker

        port = port or free_port()
        self.tracker = Tracker(LOOPBACK, port=port, port_end=port + 1, silent=True)
        self.port = self.tracker.port
        self.address = f"{LOOPBACK}:{self.port}"

    def summary(self) -> dict:
        from tvm import rpc

        return rpc.connect_tracker(LOOPBACK, self.port).summary()

    def wait_for(self, key: str, count: int, timeout: float = 120.0) -> None:
        """Wait until ``count`` servers are registered under ``key``."""
        t0 = time.time()
        while time.time() - t0 < timeout:
            queue = self.summary().get("queue_info", {}).get(key, {})
            if queue.get("free", 0) + queue.get("pending", 0) >= count:
                return
            time.sleep(0.5)
        raise RuntimeError(f"fewer than {count} servers registered under {key!r} at {self.address}: {self.summary()}")

    def close(self) -> None:
        if self.tracker is not None:
            self.tracker.terminate()
            self.tracker = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
