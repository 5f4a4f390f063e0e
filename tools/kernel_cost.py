"""Whole-kernel cycle estimates for aarch64 kernels: measured block counts x llvm-mca cycles per block.

``estimate = sum over basic blocks b of the kernel body: count(b) x cycles(b)`` where

- ``count(b)`` is how often ``b`` ran in one call, MEASURED: the kernel's own assembly (``inspect_source("asm")``)
  gets a counter increment at the start of every basic block of its ``*_compute_`` function (``x16``/``x17``
  saved and restored on the stack; ``add``/``ldr``/``str`` leave the flags alone), is assembled with
  ``llvm-mc-19`` in place of TVM's object, linked with the cross compiler, and run once under qemu-user with
  the layer's real shapes (``instrumented_library`` + ``tests/schedules/arm_runner.py``);
- ``cycles(b)`` is llvm-mca-19's steady-state cycles per iteration of the UNinstrumented block on the
  Cortex-A72 model (the hot inner loop is one block, so this is its trip count x its cycles per iteration;
  set-up, data packing, horizontal reductions, write-back and the fused epilogue are blocks like any other).

What it leaves out: caches and memory stalls (llvm-mca assumes L1 hits), branch mispredictions, the
overlap between consecutive blocks, the FFI wrapper's argument checks, and runtime calls (workspace
allocation).  A real Pi is the final word.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tools.asm import llvm_mca

COUNTS_SYMBOL = "fxp_block_counts_addr"
_BLOCK_LABEL = re.compile(r"^(\.LBB\d+_\d+|[A-Za-z_][\w.$]*):")
_ANY_BRANCH = re.compile(r"^\s*(b(\.\w+)?|cbnz|cbz|tbnz|tbz|br|ret)\b")


@dataclass
class Block:
    index: int
    function: str
    lines: list        # instruction lines (no labels or directives)

    @property
    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def _is_insn(line: str) -> bool:
    s = line.split("//")[0].strip()
    return bool(s) and not s.startswith(".") and not s.endswith(":") and not _BLOCK_LABEL.match(s)


def instrument(asm: str) -> tuple:
    """``(instrumented asm, blocks)``: a counter increment at the start of every basic block of the
    ``*_compute_`` functions; ``blocks[i]`` is the original code of the block counted in slot ``i``."""
    out, blocks = [], []
    func = None
    current = None
    pending_start = False

    def start_block():
        nonlocal current
        current = Block(len(blocks), func, [])
        blocks.append(current)
        i = current.index
        out.extend(["\tstp\tx16, x17, [sp, #-16]!",
                    "\tadrp\tx16, .Lfxp_counts",
                    "\tadd\tx16, x16, :lo12:.Lfxp_counts",
                    f"\tldr\tx17, [x16, #{8 * i}]",
                    "\tadd\tx17, x17, #1",
                    f"\tstr\tx17, [x16, #{8 * i}]",
                    "\tldp\tx16, x17, [sp], #16"])

    for raw in asm.splitlines():
        line = raw.split("//")[0].rstrip()
        stripped = line.strip()
        m = re.match(r"^([A-Za-z_][\w.$]*):", stripped)
        if m and not stripped.startswith(".L"):
            func = m.group(1) if m.group(1).endswith("_compute_") else None
            current = None
            out.append(raw)
            if func:
                start_block()
            continue
        if stripped.startswith(".Lfunc_end"):
            func, current = None, None
            out.append(raw)
            continue
        if func and re.match(r"^\.LBB\d+_\d+:", stripped):
            out.append(raw)
            start_block()
            pending_start = False
            continue
        if func and _is_insn(stripped):
            if pending_start:
                start_block()
                pending_start = False
            current.lines.append(stripped)
            out.append(raw)
            if _ANY_BRANCH.match(stripped):
                pending_start = True     # the fall-through starts a new block
            continue
        out.append(raw)
    n = max(1, len(blocks))
    out += ["\t.text", f"\t.globl\t{COUNTS_SYMBOL}", "\t.p2align\t2", f"\t.type\t{COUNTS_SYMBOL},@function",
            f"{COUNTS_SYMBOL}:", "\tadrp\tx0, .Lfxp_counts", "\tadd\tx0, x0, :lo12:.Lfxp_counts", "\tret",
            "\t.bss", "\t.p2align\t3", ".Lfxp_counts:", f"\t.zero\t{8 * n}", ""]
    return "\n".join(out) + "\n", blocks


def assemble(asm_text: str, obj: Path, triple: str = "aarch64-linux-gnu") -> None:
    proc = subprocess.run(["llvm-mc-19", f"-triple={triple}", "-filetype=obj", "-o", str(obj)],
                          input=asm_text, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"llvm-mc-19 failed: {proc.stderr[:2000]}")


def instrumented_library(lib, path: Path) -> list:
    """Export ``lib`` (an aarch64 ``tvm.tirx.build`` result) to ``path`` with block counters; the blocks."""
    from tools.arm_emulation import cross_compiler

    text, blocks = instrument(lib.inspect_source("asm"))
    with tempfile.TemporaryDirectory() as tmp:
        obj = Path(tmp) / "instrumented.o"
        assemble(text, obj)
        base = cross_compiler()

        def fcompile(output, objects, options=None):
            return base(output, [str(obj)], options)

        fcompile.output_format = "so"
        lib.export_library(str(path), fcompile=fcompile)
    return blocks


_mca_cache: dict = {}


def block_cycles(block: Block, mcpu: str = "cortex-a72") -> float:
    """llvm-mca steady-state cycles per iteration of one block (0 for an empty block)."""
    if not block.lines:
        return 0.0
    key = (mcpu, block.text)
    if key not in _mca_cache:
        _mca_cache[key] = llvm_mca(block.text, mcpu=mcpu).cycles_per_iteration
    return _mca_cache[key]


def whole_kernel_cycles(blocks: list, counts) -> dict:
    """``{"cycles", "instructions", "blocks": [(index, count, cycles per run, lines)], "hot": block}``."""
    rows, total, insns = [], 0.0, 0
    for blk in blocks:
        c = int(counts[blk.index])
        if c == 0 or not blk.lines:
            continue
        cyc = block_cycles(blk)
        total += c * cyc
        insns += c * len(blk.lines)
        rows.append({"block": blk.index, "runs": c, "cycles_per_run": round(cyc, 3),
                     "instructions": len(blk.lines), "cycles": round(c * cyc, 1)})
    rows.sort(key=lambda r: -r["cycles"])
    return {"cycles": total, "instructions": insns, "blocks": rows}
