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


def test_proofs_are_typed_records_that_round_trip(tmp_path):
    from tvm_fxp.plan import AccumulatorProof

    whole = AccumulatorProof(8, 6, 16, "l1", 27000)
    tiled = AccumulatorProof(8, 8, 16, "l1 per k-tile", 90000, tiles=3, k=288, tile_bound=31000)
    p = Plan(_plan().tensors, "debruin2020", {"acc_bits": 16}, proofs={"conv2d_0": whole, "dense_0": tiled})
    p.save(tmp_path / "plan.json")
    d = json.loads((tmp_path / "plan.json").read_text())
    assert d["proofs"]["dense_0"] == {"input_bits": 8, "weight_bits": 8, "acc_bits": 16, "proof": "l1 per k-tile",
                                      "bound": 90000, "bound_bits": 18, "tiles": 3, "k": 288, "tile_bound": 31000,
                                      "tile_bits": 16, "partial_sum_bits": 32}
    q = Plan.load(tmp_path / "plan.json")
    assert q.proofs == p.proofs and q.proofs["dense_0"].claimed_bound == 31000
    assert q.with_format("input", FixedPointFormat(8, 6, False)).proofs == p.proofs


def test_plans_with_proofs_in_their_config_still_load():
    """Plans saved before the proofs had their own key kept them in ``config["proofs"]``."""
    from pathlib import Path

    path = Path(__file__).resolve().parent / "data" / "legacy_proofs_in_config.json"   # a de Bruin plan of 2026-11
    saved = json.loads(path.read_text())["config"]["proofs"]
    q = Plan.load(path)
    assert "proofs" not in q.config and set(q.proofs) == set(saved)
    assert all(q.proofs[k].to_json() == v for k, v in saved.items())


@pytest.mark.parametrize("proof", [{"input_bits": 8, "weight_bits": 6, "acc_bits": 16, "proof": "guess", "bound": 1},
                                   {"input_bits": 8, "weight_bits": 6, "acc_bits": 16, "proof": "l1"},
                                   {"input_bits": 8, "weight_bits": 6, "acc_bits": 99, "proof": "l1", "bound": 1}])
def test_invalid_proofs_are_refused_on_load(proof):
    d = _plan().to_json()
    d["proofs"] = {"conv2d_0": proof}
    with pytest.raises(PlanError, match="proof of 'conv2d_0'"):
        Plan.from_json(d)
