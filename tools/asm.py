"""Static inspection of generated aarch64 code: the hot inner loop, its multiply work, llvm-mca cycles.

Used by the structural tests (``smlal`` on ``.8h`` in an int16 kernel) and by ``bench/arm_static.py``.
A loop is a run of instructions from a label to a later branch back to it; the hot loop of a kernel is
the innermost such loop holding the most multiply lanes.  MACs per iteration are counted from the
multiply instructions themselves (``smlal v0.8h`` = 8 multiply-accumulates, ``smull v0.4s`` = 4, ...), so
nothing about the schedule is assumed; tests compare that count with what the schedule should give.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass, field

# Vector integer multiplies whose destination lanes each do one multiply(-accumulate) of our operands.
_MUL_OPS = {"smlal", "smlal2", "umlal", "umlal2", "smull", "smull2", "umull", "umull2", "mla", "mul",
            "smlsl", "smlsl2"}
_LANES = {"16b": 16, "8b": 8, "8h": 8, "4h": 4, "4s": 4, "2s": 2, "2d": 2}
_LABEL = re.compile(r"^([.\w$]+):")
_BRANCH = re.compile(r"^(b(?:\.\w+)?|cbnz|cbz|tbnz|tbz|j[a-z]+)\s+(?:[^,]+,\s*)*([.\w$]+)\s*$")   # aarch64, x86


@dataclass
class Loop:
    label: str
    lines: list                 # instruction lines, no labels or directives
    mul_lanes: int = 0          # multiply(-accumulate) lanes per iteration
    mnemonics: dict = field(default_factory=dict)

    @property
    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def _instructions(asm: str) -> list:
    """(kind, text) per line: ('label', name) or ('insn', text); directives and comments dropped."""
    out = []
    for raw in asm.splitlines():
        line = raw.split("//")[0].strip()
        if not line:
            continue
        m = _LABEL.match(line)
        if m:
            out.append(("label", m.group(1)))
            continue
        if line.startswith("."):
            continue
        out.append(("insn", line))
    return out


def mul_lanes(insn: str) -> int:
    """Multiply lanes of one vector multiply instruction (0 for anything else)."""
    parts = insn.replace(",", " ").split()
    if not parts or parts[0] not in _MUL_OPS:
        return 0
    m = re.match(r"v\d+\.(\w+)", parts[1]) if len(parts) > 1 else None
    if not m or m.group(1) not in _LANES:
        return 0
    return _LANES[m.group(1)]


def loops(asm: str) -> list:
    """All innermost loops (label ... backward branch to it, with no other backward branch inside)."""
    items = _instructions(asm)
    label_at = {}
    found = []
    for idx, (kind, text) in enumerate(items):
        if kind == "label":
            label_at[text] = idx
            continue
        m = _BRANCH.match(text)
        if not m or m.group(2) not in label_at:
            continue
        start = label_at[m.group(2)]
        found.append((start, idx, m.group(2)))
    innermost = [(s, e, lab) for (s, e, lab) in found
                 if not any(s < s2 and e2 <= e and (s2, e2) != (s, e) for (s2, e2, _) in found)]
    result = []
    for s, e, lab in innermost:
        body = [t for k, t in items[s:e + 1] if k == "insn"]
        loop = Loop(lab, body)
        for insn in body:
            op = insn.split()[0]
            loop.mnemonics[op] = loop.mnemonics.get(op, 0) + 1
            loop.mul_lanes += mul_lanes(insn)
        result.append(loop)
    return result


def hot_loop(asm: str) -> Loop:
    """The innermost loop with the most multiply lanes per iteration."""
    cands = [lp for lp in loops(asm) if lp.mul_lanes > 0]
    if not cands:
        raise ValueError("no loop with vector multiplies found in the assembly")
    return max(cands, key=lambda lp: (lp.mul_lanes, -len(lp.lines)))


def mca_tool() -> str | None:
    return shutil.which("llvm-mca-19")


@dataclass
class McaResult:
    cycles_per_iteration: float
    block_rthroughput: float
    dispatch_width: int
    uops_per_cycle: float
    resource_pressure: dict     # resource name -> cycles per iteration
    report: str


def llvm_mca(loop_text: str, mcpu: str = "cortex-a72", triple: str = "aarch64-linux-gnu",
             iterations: int = 200) -> McaResult:
    """Run ``llvm-mca-19`` on a loop body; cycles per iteration in steady state."""
    tool = mca_tool()
    if tool is None:
        raise FileNotFoundError("llvm-mca-19 not found: run .ci/setup_arm.sh (Debian package llvm-19)")
    proc = subprocess.run([tool, f"-mtriple={triple}", f"-mcpu={mcpu}", f"-iterations={iterations}",
                           "-resource-pressure=true"],
                          input=loop_text, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"llvm-mca failed: {proc.stderr.strip()[:2000]}")
    rep = proc.stdout

    def num(key):
        m = re.search(rf"^{key}:\s+([\d.]+)", rep, re.M)
        return float(m.group(1)) if m else float("nan")

    pressure = {}
    lines = rep.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("Resource pressure per iteration:"):
            names = lines[i + 1].split()
            values = lines[i + 2].split()
            for nm, val in zip(names, values):
                pressure[nm] = 0.0 if val == "-" else float(val)
            break
    resources = {}
    in_res = False
    for line in lines:
        if line.startswith("Resources:"):
            in_res = True
            continue
        if in_res:
            m = re.match(r"\[(\w+)\]\s+-\s+(\S+)", line.strip())
            if m:
                resources[f"[{m.group(1)}]"] = m.group(2)
            elif line.strip() == "":
                if resources:
                    in_res = False
    named = {resources.get(k, k): v for k, v in pressure.items()}
    return McaResult(cycles_per_iteration=num("Total Cycles") / num("Iterations"),
                     block_rthroughput=num("Block RThroughput"), dispatch_width=int(num("Dispatch Width")),
                     uops_per_cycle=num("uOps Per Cycle"), resource_pressure=named, report=rep)
