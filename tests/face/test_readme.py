"""The README's Python example runs as written."""

import re
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]


def test_readme_pipeline_example_runs(monkeypatch):
    text = (ROOT / "README.md").read_text()
    block = re.search(r"## In your own TVM pipeline\s+```python\n(.*?)```", text, re.S).group(1)
    assert len(block.strip().splitlines()) <= 10
    monkeypatch.chdir(ROOT)
    scope = {}
    exec(compile(block, "README.md", "exec"), scope)
    logits = scope["logits"]
    assert logits.shape == (8, 10) and np.all(np.isfinite(logits))
    from tvm_fxp.passes import float_ops_in_integer_graph

    realized = scope["pipeline"](scope["mod"])
    assert float_ops_in_integer_graph(realized) == []
