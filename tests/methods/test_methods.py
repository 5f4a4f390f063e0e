"""Each allocation method: its own property, and its plan realized bit-exact with its simulation."""

import math

import numpy as np
import pytest

import tvm_fxp
from tvm_fxp.api import make_evaluator
from tvm_fxp.methods import get_method
from tvm_fxp.methods.debruin2020 import DeBruin2020
from tvm_fxp.methods.fxpqnet import FxpQNet
from tvm_fxp.methods.goyal2021 import Goyal2021
from tvm_fxp.methods.lin2016 import KAPPA_DB_PER_BIT, Lin2016, build_plan
from tvm_fxp.passes import float_ops_in_integer_graph
from tvm_fxp.passes.relax_utils import const_np, is_const, main_bindings, op_name
from rebuild import rebuild_function
from conftest import model_path

MODELS = ["fmnist_vgg", "fmnist_resnet"]
CONFIGS = {
    "lin2016": Lin2016(offset_step=0.5),
    "goyal2021": Goyal2021(max_bits=6, offsets=(-1, 0, 1)),
    "fxpqnet": FxpQNet(start_bits=8, min_bits=3, budget=0.03),  # 96 images: one disagreement is 1 point
    "debruin2020": DeBruin2020(acc_bits=16, max_bits=8),
}
# per search: a machine-independent budget (a time limit is not, on a loaded CI box); FxP-QNet scores every
# tensor's one-bit reduction before its first commit, so it needs more than one pass over the tensors
SEARCH_EVALUATIONS = {"fxpqnet": 60}
DEFAULT_EVALUATIONS = 25


@pytest.fixture(scope="module")
def models(calib_images):
    from tvm_fxp.calibrate import calibrate

    out = {}
    for name in MODELS:
        prepared, lg = tvm_fxp.load_model(model_path(name))
        out[name] = (prepared, lg, calibrate(prepared, lg, calib_images, progress=False))
    return out


@pytest.fixture(scope="module")
def search_data():
    from tvm_fxp.datasets import fashion_mnist

    d = fashion_mnist("val", limit=96)   # searches score on the validation split, never on training/test images
    return d.inputs, d.labels


@pytest.fixture(scope="module")
def plans(models, search_data):
    """(model, method) -> (Quantized, evaluator), each search capped at SEARCH_EVALUATIONS."""
    x, y = search_data
    out = {}
    for name, (prepared, lg, stats) in models.items():
        for method, config in CONFIGS.items():
            labels = None if getattr(config, "label_free", False) else y
            ev = make_evaluator(prepared, lg, stats, x, labels, None, progress=False,
                                max_evaluations=SEARCH_EVALUATIONS.get(method, DEFAULT_EVALUATIONS))
            plan = get_method(method).allocate(lg, stats, config, ev)
            out[name, method] = (tvm_fxp.bind_plan(prepared, lg, plan, stats), ev)
    return out


@pytest.mark.parametrize("method", sorted(CONFIGS))
@pytest.mark.parametrize("name", MODELS)
def test_plan_realizes_bit_exact(plans, test_images, name, method):
    q, _ = plans[name, method]
    acc = "narrow" if method == "debruin2020" else "wide"
    real_mod = q.realized(accumulator=acc)
    assert float_ops_in_integer_graph(real_mod) == []
    x = test_images.inputs[:200]
    sim = tvm_fxp.Runner(tvm_fxp.build(q.simulated())).run(x)
    real = tvm_fxp.Runner(tvm_fxp.build(real_mod)).run(x)
    np.testing.assert_array_equal(sim, real)


@pytest.mark.parametrize("name", MODELS)
def test_parametric_simulation_equals_simulate(plans, search_data, name):
    """The search's compiled-once module gives the same outputs as Simulate of the chosen plan."""
    q, ev = plans[name, "goyal2021"]
    x = search_data[0][:32]
    np.testing.assert_array_equal(ev.sim.outputs(q.plan, x), tvm_fxp.Runner(tvm_fxp.build(q.simulated())).run(x))


@pytest.mark.parametrize("name", MODELS)
def test_lin2016_bit_widths_follow_parameter_counts(plans, name):
    q, _ = plans[name, "lin2016"]
    cfg = CONFIGS["lin2016"]
    layers = [l for l in q.graph.layers.values() if l.weight is not None]
    bits = {l.name: q.plan[l.weight_key].bits for l in layers}
    free = [l for l in layers if cfg.min_bits < bits[l.name] < cfg.max_bits]
    for a in free:
        for b in free:
            ideal = (10 / KAPPA_DB_PER_BIT) * math.log10(b.weight.size / a.weight.size)
            assert abs((bits[a.name] - bits[b.name]) - ideal) <= 1.0, (a.name, b.name, bits, ideal)
    # bigger layers never get more bits than smaller ones
    for a in layers:
        for b in layers:
            if a.weight.size > 2 * b.weight.size:
                assert bits[a.name] <= bits[b.name]
    assert len(set(bits.values())) > 1   # not an equal-bit-width plan


@pytest.mark.parametrize("name", MODELS)
def test_goyal2021_meets_budget_cumulatively(plans, name):
    q, ev = plans[name, "goyal2021"]
    cfg = CONFIGS["goyal2021"]
    trace = [t for t in q.plan.config["trace"] if "tensor" in t]
    assert trace, "the search chose nothing"
    for t in trace:   # each choice was accepted with all earlier choices applied, within its share
        assert t["loss"] <= cfg.budget + 1e-9 or t["bits"] > cfg.max_bits
        assert t["loss"] <= t["allowed"] + 1e-9 or t["bits"] > cfg.max_bits
    if not any("timeout" in t for t in q.plan.config["trace"]):
        assert ev.loss(q.plan) <= cfg.budget + 1e-9


@pytest.mark.parametrize("name", MODELS)
def test_goyal2021_budget_schedule_follows_costs(models, name):
    """The budget is spread over the tensors by their share of memory and multiply cost: the running limit
    never falls, ends at the budget, and a tensor's step is its share (biases: a few elements, no MACs)."""
    from tvm_fxp.methods.evaluate import search_order
    from tvm_fxp.methods.goyal2021 import budget_schedule

    _, lg, _ = models[name]
    cfg = Goyal2021(budget=0.01, mult_share=0.75)
    sched = budget_schedule(lg, cfg)
    keys = search_order(lg)
    limits = [sched[k] for k in keys]
    assert all(b >= a for a, b in zip(limits, limits[1:]))
    assert limits[-1] == pytest.approx(0.01)
    steps = dict(zip(keys, np.diff([0.0] + limits)))
    total_elems = sum(int(np.prod(s)) for _, _, s in lg.tensors().values())
    total_macs = 2 * sum(l.macs for l in lg.layers.values() if l.weight is not None)
    big = max((l for l in lg.layers.values() if l.weight is not None), key=lambda l: l.macs)
    assert steps[big.weight_key] == pytest.approx(0.01 * (0.25 * big.weight.size / total_elems
                                                          + 0.75 * big.macs / total_macs))
    for l in lg.layers.values():
        if l.bias is not None:
            assert steps[l.bias_key] < steps[big.weight_key] / 10
    assert set(budget_schedule(lg, Goyal2021(budget=0.01, split="none")).values()) == {0.01}


def test_debruin2020_scores_candidates_on_search_and_check_images(models, search_data):
    """With a check split every candidate is scored on both image sets (pooled), and the plan keeps its proofs."""
    from tvm_fxp.datasets import fashion_mnist

    prepared, lg, stats = models["fmnist_vgg"]
    x, y = search_data
    other = fashion_mnist("val", limit=192)
    ev = make_evaluator(prepared, lg, stats, x, y, None, progress=False, check_inputs=other.inputs[96:],
                        check_labels=other.labels[96:])
    plan = get_method("debruin2020").allocate(lg, stats, DeBruin2020(acc_bits=16, max_bits=8, max_tiles=0), ev)
    assert ev.evaluations > 0 and ev.check.evaluations == ev.evaluations == plan.config["check_evaluations"]
    assert set(plan.proofs) == {l.name for l in lg.layers.values() if l.weight is not None}
    ev2 = make_evaluator(prepared, lg, stats, x, y, None, progress=False)
    plan2 = get_method("debruin2020").allocate(lg, stats, DeBruin2020(acc_bits=16, max_bits=8, max_tiles=0), ev2)
    assert plan2.config["check_evaluations"] is None and ev2.evaluations == ev.evaluations


def test_lin2016_scores_plans_on_search_and_check_images(models, search_data):
    """With a check split every plan (equal bit-widths and offsets) is scored on both image sets together, and
    the chosen allocation is the smallest whose pooled loss is within the equal-bit-width plan's."""
    from tvm_fxp.costs import weight_bits
    from tvm_fxp.datasets import fashion_mnist

    prepared, lg, stats = models["fmnist_vgg"]
    x, y = search_data
    other = fashion_mnist("val", limit=192)
    cfg = Lin2016(offset_step=0.5)
    ev = make_evaluator(prepared, lg, stats, x, y, None, progress=False, max_evaluations=20,
                        check_inputs=other.inputs[96:], check_labels=other.labels[96:])
    plan = get_method("lin2016").allocate(lg, stats, cfg, ev)
    trace = plan.config["trace"]
    assert ev.evaluations > 0 and ev.check.evaluations == ev.evaluations == plan.config["check_evaluations"]
    pooled = (ev.loss(plan) + ev.check.loss(plan)) / 2            # 96 + 96 images
    chosen = [t for t in trace["offsets"] if t["weight_bits"] == weight_bits(lg, plan)]
    assert chosen and chosen[0]["loss"] == pytest.approx(pooled, abs=1e-5)
    target = trace["equal_bits"][-1]["loss"] + cfg.tolerance
    if trace["target_met"]:
        assert chosen[0]["loss"] <= target + 1e-5
        assert weight_bits(lg, plan) == min(t["weight_bits"] for t in trace["offsets"] if t["loss"] <= target + 1e-5)
    # without pooling the check images are not read and the losses are the search images' alone
    ev2 = make_evaluator(prepared, lg, stats, x, y, None, progress=False, max_evaluations=20,
                         check_inputs=other.inputs[96:], check_labels=other.labels[96:])
    plan2 = get_method("lin2016").allocate(lg, stats, Lin2016(offset_step=0.5, pooled=False), ev2)
    assert ev2.check.evaluations == 0 and plan2.config["check_evaluations"] is None
    rho = [l.name for l in lg.layers.values() if l.weight is not None]
    for pl, loss in ((plan, lambda p: (ev.loss(p) + ev.check.loss(p)) / 2), (plan2, ev2.loss)):
        assert pl.config["trace"]["equal_bits"]
        for t in pl.config["trace"]["equal_bits"]:
            assert t["loss"] == pytest.approx(loss(build_plan(lg, stats, cfg, {k: t["bits"] for k in rho})), abs=1e-5)


def test_lin2016_with_bias_correction_scores_and_keeps_corrected_plans(models, search_data):
    """``correct_biases``: every plan is scored after the label-free bias correction on the search images, the
    equal-bit-width ones too, and the chosen plan keeps its corrections."""
    from tvm_fxp.costs import weight_bits
    from tvm_fxp.methods.correction import corrected_plan

    prepared, lg, stats = models["fmnist_vgg"]
    x, y = search_data
    cfg = Lin2016(offset_step=0.5, correct_biases=True)
    ev = make_evaluator(prepared, lg, stats, x, y, None, progress=False, max_evaluations=12)
    plan = get_method("lin2016").allocate(lg, stats, cfg, ev)
    biased = {l.name for l in lg.layers.values() if l.weight is not None and l.bias is not None}
    assert set(plan.bias_correction) == biased
    chosen = [t for t in plan.config["trace"]["offsets"] if t["weight_bits"] == weight_bits(lg, plan)]
    again = corrected_plan(lg, build_plan(lg, stats, cfg, chosen[0]["bits"]), ev.sim, x)
    assert again.tensors == plan.tensors and again.bias_correction == plan.bias_correction
    assert chosen[0]["loss"] == pytest.approx(ev.loss(plan), abs=1e-9)
    rho = [l.name for l in lg.layers.values() if l.weight is not None]
    for t in plan.config["trace"]["equal_bits"]:
        eq = corrected_plan(lg, build_plan(lg, stats, cfg, {k: t["bits"] for k in rho}), ev.sim, x)
        assert t["loss"] == pytest.approx(ev.loss(eq), abs=1e-5)


@pytest.mark.parametrize("name", MODELS)
def test_fxpqnet_never_commits_a_step_that_breaks_the_budget(plans, name):
    q, ev = plans[name, "fxpqnet"]
    assert ev.labels is None and ev.use_labels is False    # self-distillation only
    commits = [c for c in q.plan.config["commits"] if "tensor" in c]
    assert commits
    assert all(c["agreement_drop"] <= CONFIGS["fxpqnet"].budget for c in commits)
    assert 1 - ev(q.plan).agreement <= CONFIGS["fxpqnet"].budget


def test_fxpqnet_reads_no_labels(models, search_data):
    """Poisoned labels change nothing: the method is label-free."""
    prepared, lg, stats = models["fmnist_vgg"]
    x, y = search_data
    cfg = FxpQNet(start_bits=8, budget=0.05)   # 48 images: one disagreement is 2 points
    p1 = tvm_fxp.quantize(model_path("fmnist_vgg"), x, cfg, search_inputs=x[:48], search_labels=(y[:48] + 1) % 10,
                          progress=False, time_limit=15).plan
    p2 = tvm_fxp.quantize(model_path("fmnist_vgg"), x, cfg, search_inputs=x[:48], search_labels=None,
                          progress=False, time_limit=15).plan
    if not any("timeout" in c for c in p1.config["commits"] + p2.config["commits"]):
        assert p1.tensors == p2.tensors


def _accumulator_probe(realized):
    """The realized module returning every conv2d/matmul accumulator (an overflow detector on int32/64)."""
    func = realized["main"]
    accs = [b.var for b in main_bindings(func) if op_name(b.value) in ("relax.nn.conv2d", "relax.matmul")]
    from tvm import relax

    new = rebuild_function(func, lambda bb, b, v, env: v, epilogue=lambda bb, r, env: relax.Tuple([env[a] for a in accs]))
    import tvm

    return tvm.IRModule({"main": new})


@pytest.mark.parametrize("name", MODELS)
def test_debruin2020_bound_holds_on_real_and_worst_case_inputs(plans, test_images, name):
    import tvm
    from tvm import relax

    q, _ = plans[name, "debruin2020"]
    P = CONFIGS["debruin2020"].acc_bits
    limit = 1 << (P - 1)
    weighted = [l for l in q.graph.layers.values() if l.weight is not None]
    # the proof stored in the plan
    for l in weighted:
        proof = q.plan.proofs[l.name].to_json()
        assert proof["bound"] < limit and q.arithmetic[l.name].bound.bits <= P
    # real data through the realized graph with wide accumulators, every accumulator observed
    probe = _accumulator_probe(q.realized(accumulator="wide"))
    vm = relax.VirtualMachine(tvm_fxp.build(probe), tvm.cpu())
    rng = np.random.default_rng(0)
    for x in (test_images.inputs[:200], rng.random((32, 1, 28, 28), dtype=np.float32)):
        accs = vm["main"](tvm.runtime.tensor(x))
        for l, a in zip(weighted, accs):
            assert np.abs(a.numpy()).max() < limit, l.name
    # adversarial worst case per layer: inputs at the format's extreme with the sign of each weight
    for l in weighted:
        x_fmt = q.plan[q.graph.layers[l.inputs[0]].output_key]
        wq = q.plan[l.weight_key].quantize(l.weight)
        flat = np.moveaxis(wq, l.weight_axis, 0).reshape(wq.shape[l.weight_axis], -1).astype(np.int64)
        hi = np.where(flat > 0, x_fmt.qmax, x_fmt.qmin)      # maximises each channel's sum
        lo = np.where(flat > 0, x_fmt.qmin, x_fmt.qmax)      # minimises it
        bias = q.arithmetic[l.name].bias_acc
        b = np.zeros(len(flat), np.int64) if bias is None else bias
        worst = np.maximum(np.abs((flat * hi).sum(1) + b), np.abs((flat * lo).sum(1) + b))
        assert worst.max() < limit, l.name
        assert worst.max() <= q.plan.proofs[l.name].bound


def test_debruin2020_int16_accumulators_are_used(plans):
    q, _ = plans["fmnist_vgg", "debruin2020"]
    mod = q.realized(accumulator="narrow")
    dtypes = {str(b.var.ty.dtype) for b in main_bindings(mod["main"])
              if op_name(b.value) in ("relax.nn.conv2d", "relax.matmul")}
    assert dtypes == {"int16"}


# ---- mellempudi2017: clusters of filters sharing one integer multiplier ------------------------------------------

@pytest.fixture(scope="module")
def mellempudi_plans(models):
    from tvm_fxp.methods.mellempudi2017 import Mellempudi2017, allocate

    out = {}
    for name, (prepared, lg, stats) in models.items():
        for weights in ("ternary", "4bit"):
            plan = allocate(lg, stats, Mellempudi2017(cluster=4, weights=weights))
            out[name, weights] = tvm_fxp.bind_plan(prepared, lg, plan, stats)
    return out


@pytest.mark.parametrize("weights,levels", [("ternary", 3), ("4bit", 15)])
@pytest.mark.parametrize("name", MODELS)
def test_mellempudi2017_levels_per_cluster(mellempudi_plans, name, weights, levels):
    """Every cluster of N=4 consecutive filters takes at most 3 (ternary) or 15 (symmetric 4-bit: -7..7)
    distinct real weight values, all ``level * m * 2**-f`` of the cluster's single ``(m, f)``."""
    q = mellempudi_plans[name, weights]
    weighted = [l for l in q.graph.layers.values() if l.weight is not None]
    for layer in (weighted[0], weighted[-1]):      # kept at 8-bit per-channel (first_last_bits)
        assert q.plan[layer.weight_key].bits == 8 and q.plan[layer.weight_key].multiplier is None
    for layer in weighted[1:-1]:
        fmt = q.plan[layer.weight_key]
        assert fmt.multiplier is not None and len(fmt.multiplier) == layer.channels
        wq = np.moveaxis(fmt.quantize(layer.weight), layer.weight_axis, 0)
        real = np.moveaxis(fmt.fake_quantize(layer.weight), layer.weight_axis, 0)
        assert np.abs(wq).max() <= (1 if weights == "ternary" else 7)
        for start in range(0, layer.channels, 4):
            sl = slice(start, start + 4)
            assert len(set(fmt.multiplier[sl])) == 1 and len(set(fmt.frac[sl])) == 1
            assert np.unique(real[sl]).size <= levels, (layer.name, start)
            assert np.unique(wq[sl]).size >= 2                      # not a degenerate all-zero cluster


@pytest.mark.parametrize("name, weights", [("fmnist_vgg", "ternary"), ("fmnist_resnet", "4bit"),
                                           pytest.param("fmnist_vgg", "4bit", marks=pytest.mark.slow),
                                           pytest.param("fmnist_resnet", "ternary", marks=pytest.mark.slow)])
def test_mellempudi2017_realizes_bit_exact_with_adds_and_one_multiply(mellempudi_plans, test_images, name, weights):
    """The integer graph convolves with the stored levels (ternary: {-1, 0, 1}, additions and subtractions) and
    multiplies each output once by its cluster's integer ``m``; it agrees bit for bit with the simulation, with
    wide and with narrow (int16 where proven) accumulators; the share of multiplies replaced is reported."""
    q = mellempudi_plans[name, weights]
    x = test_images.inputs[:200]
    sim = tvm_fxp.Runner(tvm_fxp.build(q.simulated())).run(x)
    for acc in ("wide", "narrow"):
        real_mod = q.realized(accumulator=acc)
        assert float_ops_in_integer_graph(real_mod) == []
        real = tvm_fxp.Runner(tvm_fxp.build(real_mod)).run(x)
        np.testing.assert_array_equal(sim, real)
        if acc == "narrow":          # the structure below is checked on the wide graph (narrow may k-tile)
            continue
        bindings = list(main_bindings(real_mod["main"]))
        convs = [b for b in bindings if op_name(b.value) in ("relax.nn.conv2d", "relax.matmul")]
        bound = {b.var: b.value for b in bindings}
        consts = [const_np(bound.get(b.value.args[1], b.value.args[1])) for b in convs]
        weighted = [l for l in q.graph.layers.values() if l.weight is not None]
        assert len(convs) == len(weighted)
        clustered = [i for i, l in enumerate(weighted) if q.plan[l.weight_key].multiplier is not None]
        assert clustered == list(range(1, len(weighted) - 1))
        if weights == "ternary":
            assert all(set(np.unique(consts[i])) <= {-1, 0, 1} for i in clustered)
        users = {b.value.args[0] for b in bindings if op_name(b.value) == "relax.multiply"
                 and is_const(bound.get(b.value.args[1], b.value.args[1]))
                 and const_np(bound.get(b.value.args[1], b.value.args[1])).dtype.kind == "i"}
        assert {convs[i].var for i in clustered} <= users       # one multiply by m after each clustered layer
    top1 = (sim.argmax(1) == test_images.labels[:200]).mean()
    assert top1 > (0.15 if weights == "ternary" else 0.88), top1   # ternary without retraining: see README
    replaced = q.plan.config["multiplies_replaced"]
    assert (0.5 < replaced < 1) if weights == "ternary" else replaced == 0.0


def test_mellempudi2017_cli_flags(tmp_path):
    from tvm_fxp.cli import build_parser, method_config

    args = build_parser().parse_args(["quantize", "m.onnx", "--calib", "synthetic", "--out", str(tmp_path),
                                      "--method", "mellempudi2017", "--cluster", "8", "--weights", "4bit"])
    cfg = method_config(args)
    assert (cfg.name, cfg.cluster, cfg.weights) == ("mellempudi2017", 8, "4bit")
    from tvm_fxp.methods import MethodError

    assert cfg.first_last_bits == 8 and cfg.act_bits == 8
    args.act_bits = 4
    assert method_config(args).act_bits == 4
    args.act_bits = 1
    with pytest.raises(MethodError, match="--act-bits must be in 2..16, got 1"):
        method_config(args)
    args.act_bits, args.cluster = 4, 0
    with pytest.raises(MethodError, match="--cluster must be in 1..64"):
        method_config(args)


def test_mellempudi2017_act_bits_format_every_activation(models):
    """``act_bits=4``: every activation (the input's quantize included) takes a 4-bit format, unsigned after the
    ReLUs, which is what lets an aarch64 build run the ternary layers bit-serially (tests/schedules)."""
    from tvm_fxp.methods.mellempudi2017 import Mellempudi2017, allocate

    prepared, lg, stats = models["fmnist_vgg"]
    plan = allocate(lg, stats, Mellempudi2017(act_bits=4))
    acts = {k: f for k, f in plan.tensors.items() if k == "input" or k.endswith(".output")}
    assert acts and all(f.bits == 4 for f in acts.values())
    hidden = [f for k, f in acts.items() if k not in ("input", lg.layers[lg.outputs[0]].output_key)]
    assert hidden and not any(f.signed for f in hidden) and plan.config["act_bits"] == 4


@pytest.mark.parametrize("accumulator", ["narrow", "wide"])
def test_tampered_int16_claim_is_refused_at_realize(plans, accumulator):
    """A de Bruin plan proves each layer fits a 16-bit accumulator.  Widen one layer's weight format by hand (the
    plan still claims the proof): Realize recomputes the bound from the weights and refuses, naming the layer,
    instead of emitting an int16 kernel that would wrap (or silently widening)."""
    import dataclasses

    from tvm_fxp.formats import FixedPointFormat
    from tvm_fxp.passes import Annotate, FxpGraphError, Realize
    from tvm_fxp.plan import Plan

    q, _ = plans["fmnist_vgg", "debruin2020"]
    layer = [l for l in q.graph.layers.values() if l.weight is not None][1]
    assert q.plan.proofs[layer.name].acc_bits == 16
    w = q.plan[layer.weight_key]
    wide = FixedPointFormat(12, tuple(f + 12 - w.bits for f in w.frac_list) if w.per_channel else w.frac + 12 - w.bits,
                            True, w.axis)
    tampered = Plan(dict(q.plan.tensors, **{layer.weight_key: wide}), q.plan.method, q.plan.config, proofs=q.plan.proofs)
    qt = tvm_fxp.bind_plan(q.prepared, q.graph, tampered)
    assert qt.arithmetic[layer.name].bound.bits > 16          # the tampered formats really break the proof
    msg = rf"layer {layer.name}: the plan claims a proof that its accumulator fits 16 bits, but .* the bound is \d+"
    with pytest.raises(FxpGraphError, match=msg):
        qt.realized(accumulator)
    with pytest.raises(FxpGraphError, match=msg):             # the same through the user's own pass pipeline
        import tvm

        tvm.transform.Sequential([Annotate(tampered), Realize(accumulator)])(q.prepared)
    # untampered: realizes, and every proven layer gets its int16 accumulator
    assert q.realized(accumulator) is not None
    unclaimed = dataclasses.replace(tampered, proofs={})
    assert tvm_fxp.bind_plan(q.prepared, q.graph, unclaimed).realized(accumulator) is not None  # no claim, no refusal


# ---- de Bruin's fallback: k-tiled 16-bit partial sums -----------------------------------------------------------

@pytest.fixture(scope="module")
def tiled_debruin(models, search_data):
    """fmnist_vgg under de Bruin with tiles considered at every layer (budget 0), scored on 512 images (96
    are too coarse to tell a tiled configuration from a whole one)."""
    from tvm_fxp.datasets import fashion_mnist

    prepared, lg, stats = models["fmnist_vgg"]
    d = fashion_mnist("val", limit=512)
    ev = make_evaluator(prepared, lg, stats, d.inputs, d.labels, None, progress=False,
                        max_evaluations=60)
    plan = get_method("debruin2020").allocate(lg, stats, DeBruin2020(acc_bits=16, max_bits=8, budget=0.0), ev)
    return tvm_fxp.bind_plan(prepared, lg, plan, stats)


def test_debruin2020_k_tiles_where_no_whole_configuration_keeps_accuracy(tiled_debruin, test_images):
    """Tiled layers carry a per-tile proof (at most 8 tiles, each partial sum < 2**15 for every output channel,
    recomputed here from the quantized weights); Realize splits exactly those layers into as many int16 tiles,
    bit-exact with the simulation; untiled layers keep the whole-reduction proof."""
    from tvm_fxp.bounds import k_tiles
    from tvm_fxp.passes.realize import realized_accumulators

    q = tiled_debruin
    proofs = {k: p.to_json() for k, p in q.plan.proofs.items()}
    tiled = {k: v for k, v in proofs.items() if "tiles" in v}
    assert tiled, proofs
    narrow = q.realized(accumulator="narrow")
    how = realized_accumulators(narrow)
    for l in (l for l in q.graph.layers.values() if l.weight is not None):
        p = proofs[l.name]
        if l.name not in tiled:
            assert p["bound"] < 1 << 15 and how[l.name] == "int16", (l.name, p, how[l.name])
            continue
        x_fmt = q.plan[q.graph.layers[l.inputs[0]].output_key]
        tiles = k_tiles(x_fmt.max_abs_q, q.plan[l.weight_key].quantize(l.weight), l.op)
        assert tiles is not None and 2 <= len(tiles.ranges) == p["tiles"] <= 8
        assert tiles.tile_bound == p["tile_bound"] < 1 << 15 <= p["bound"]
        assert how[l.name].startswith(f"int16 x{p['tiles']} k-tiles"), how[l.name]
    x = test_images.inputs[:200]
    np.testing.assert_array_equal(tvm_fxp.Runner(tvm_fxp.build(narrow)).run(x),
                                  tvm_fxp.Runner(tvm_fxp.build(q.simulated())).run(x))


def test_debruin2020_tampered_tile_claim_is_refused(tiled_debruin):
    """A tiled layer's weights widened by hand: one input channel's products alone could overflow int16, so
    no tiling proves the claim; Realize refuses, naming the layer and the per-tile claim."""
    from tvm_fxp.formats import FixedPointFormat
    from tvm_fxp.passes import FxpGraphError
    from tvm_fxp.plan import Plan

    q = tiled_debruin
    name = next(k for k, v in q.plan.proofs.items() if v.tiles)
    w = q.plan[q.graph.layers[name].weight_key]
    wide = FixedPointFormat(8, tuple(f + 8 - w.bits for f in w.frac_list) if w.per_channel else w.frac + 8 - w.bits,
                            True, w.axis)
    x_key = q.graph.layers[q.graph.layers[name].inputs[0]].output_key
    x = q.plan[x_key]
    tampered = Plan(dict(q.plan.tensors, **{q.graph.layers[name].weight_key: wide,
                                            x_key: FixedPointFormat(8, x.frac + 8 - x.bits, x.signed)}),
                    q.plan.method, q.plan.config, proofs=q.plan.proofs)
    qt = tvm_fxp.bind_plan(q.prepared, q.graph, tampered)
    for accumulator in ("narrow", "wide"):
        with pytest.raises(FxpGraphError, match=rf"layer {name}: the plan claims a proof that each k-tile's "
                                                 r"partial sum fits 16 bits"):
            qt.realized(accumulator)


# ---- FxP-QNet's label-free post-training correction ---------------------------------------------------------------

def test_bias_correction_recovers_uniform_4bit_without_labels(models, search_data, test_images):
    """Uniform 4-bit vgg loses most of its accuracy, largely as shifted output means.  The correction (no
    labels: the evaluator has none) moves the corrected layers' output means towards float's and recovers the
    agreement with float; the corrected plan survives JSON and realizes bit-exact with its simulation."""
    import json

    from tvm_fxp.methods.correction import correct_biases
    from tvm_fxp.methods.uniform import Uniform, allocate
    from tvm_fxp.plan import Plan
    from tvm_fxp.report import agreement

    prepared, lg, stats = models["fmnist_vgg"]
    ev = make_evaluator(prepared, lg, stats, search_data[0], None, None, progress=False)
    assert ev.labels is None and not ev.use_labels
    plan = allocate(lg, stats, Uniform(4))
    corrected, report = correct_biases(lg, plan, ev)
    assert report["applied"] and report["agreement_after"] > report["agreement_before"] + 0.2, report
    with_bias = {l.name for l in lg.layers.values() if l.weight is not None and l.bias is not None}
    assert set(corrected.bias_correction) == with_bias
    ref = ev.sim.layer_means(None, ev.inputs)          # per channel, before the bias

    def shift(p, n):   # |mean of the layer's output (after its quantized bias) - float's|, averaged over channels
        layer = lg.layers[n]
        bias = p[layer.bias_key].fake_quantize(p.corrected_bias(n, layer.bias).astype(np.float64))
        return float(np.abs(ev.sim.layer_means(p, ev.inputs)[n] + bias - (ref[n] + layer.bias)).mean())

    assert sum(shift(corrected, n) for n in with_bias) < 0.25 * sum(shift(plan, n) for n in with_bias)
    loaded = Plan.from_json(json.loads(json.dumps(corrected.to_json())))
    assert loaded.bias_correction == corrected.bias_correction
    q = tvm_fxp.bind_plan(prepared, lg, loaded, stats)
    x = test_images.inputs[:300]
    real = tvm_fxp.Runner(tvm_fxp.build(q.realized())).run(x)
    np.testing.assert_array_equal(real, tvm_fxp.Runner(tvm_fxp.build(q.simulated())).run(x))
    np.testing.assert_array_equal(ev.sim.outputs(loaded, x), tvm_fxp.Runner(tvm_fxp.build(q.simulated())).run(x))
    fl = tvm_fxp.Runner(tvm_fxp.build(prepared)).run(x)
    uncorrected = tvm_fxp.Runner(tvm_fxp.build(tvm_fxp.bind_plan(prepared, lg, plan, stats).realized())).run(x)
    assert agreement(fl, real) > agreement(fl, uncorrected) + 0.2


def test_bias_correction_of_another_model_is_refused(models):
    from tvm_fxp.methods.uniform import Uniform, allocate
    from tvm_fxp.plan import Plan, PlanError

    prepared, lg, stats = models["fmnist_vgg"]
    plan = allocate(lg, stats, Uniform(8))
    bad = Plan(plan.tensors, bias_correction={"conv2d_0": [0.1] * 3})
    with pytest.raises(PlanError, match=r"bias_correction of conv2d_0: 3 values for a bias of \d+ channels"):
        tvm_fxp.bind_plan(prepared, lg, bad, stats)
    with pytest.raises(PlanError, match=r"bias_correction names 'nope'"):
        tvm_fxp.bind_plan(prepared, lg, Plan(plan.tensors, bias_correction={"nope": [0.1]}), stats)
    with pytest.raises(PlanError, match=r"'bias_correction' must map layer -> non-empty list of finite numbers"):
        Plan.from_json({**plan.to_json(), "bias_correction": {"conv2d_0": [float("nan")]}})
