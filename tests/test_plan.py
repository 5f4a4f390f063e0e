import json

import pytest

from tvm_fxp.formats import FixedPointFormat
from tvm_fxp.plan import Plan, PlanError


def _plan():
    return Plan({"input": FixedPointFormat(8, 7, False), "conv2d_0.weight": FixedPointFormat(8, 6)}, "uniform",
                {"bits": 8})


def test_roundtrip(tmp_path):
    p = _plan()
    p.save(tmp_path / "plan.json")
    q = Plan.load(tmp_path / "plan.json")
    assert q.tensors == p.tensors and q.method == "uniform"


@pytest.mark.parametrize("edit, msg", [
    (lambda d: d["tensors"]["input"].update(bits=40), r"tensor 'input'.*bits must be in"),
    (lambda d: d["tensors"]["input"].pop("frac"), r"missing keys \['frac'\]"),
    (lambda d: d.update(format_version=99), "format_version must be 1"),
    (lambda d: d.update(tensors={}), "non-empty"),
    (lambda d: d.update(rounding="stochastic"), "rounding"),
])
def test_invalid_plan_files_name_the_problem(tmp_path, edit, msg):
    d = _plan().to_json()
    edit(d)
    (tmp_path / "plan.json").write_text(json.dumps(d))
    with pytest.raises(PlanError, match=msg):
        Plan.load(tmp_path / "plan.json")


def test_not_json(tmp_path):
    (tmp_path / "plan.json").write_text("{oops")
    with pytest.raises(PlanError, match="not valid JSON"):
        Plan.load(tmp_path / "plan.json")


def test_keys_must_match_model():
    with pytest.raises(PlanError, match=r"missing formats for \['conv2d_0.bias'\].*unknown tensors \['conv2d_0.weight'\]"):
        _plan().check_keys({"input": 0, "conv2d_0.bias": 0})
