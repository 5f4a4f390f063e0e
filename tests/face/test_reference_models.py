"""The two committed reference CNNs, end to end on real Fashion-MNIST images."""

import numpy as np
import pytest

import tvm_fxp
from tvm_fxp.api import output_integers
from tvm_fxp.passes import float_ops_in_integer_graph
from tvm_fxp.report import agreement, top1
from conftest import model_path

MODELS = ["fmnist_vgg", "fmnist_resnet"]


@pytest.fixture(scope="module")
def prepared_models():
    return {name: tvm_fxp.load_model(model_path(name)) for name in MODELS}


@pytest.fixture(scope="module")
def calib_stats(prepared_models, calib_images):
    from tvm_fxp.calibrate import calibrate

    return {name: calibrate(p, lg, calib_images, progress=False) for name, (p, lg) in prepared_models.items()}


def _quantized(prepared_models, calib_stats, name, bits):
    from tvm_fxp.methods import uniform

    prepared, lg = prepared_models[name]
    plan = uniform.allocate(lg, calib_stats[name], tvm_fxp.Uniform(bits))
    return tvm_fxp.bind_plan(prepared, lg, plan)


@pytest.mark.parametrize("bits", [4, pytest.param(6, marks=pytest.mark.slow), 8,
                                  pytest.param(12, marks=pytest.mark.slow), 16])
@pytest.mark.parametrize("name", MODELS)
def test_simulation_and_integer_graph_agree_bit_for_bit(prepared_models, calib_stats, test_images, name, bits):
    q = _quantized(prepared_models, calib_stats, name, bits)
    real_mod = q.realized()
    assert float_ops_in_integer_graph(real_mod) == []
    real = tvm_fxp.Runner(tvm_fxp.build(real_mod))
    sim = tvm_fxp.Runner(tvm_fxp.build(q.simulated()))
    rng = np.random.default_rng(bits)
    random_inputs = np.concatenate([rng.random((48, 1, 28, 28), dtype=np.float32),
                                    rng.normal(0, 3, (16, 1, 28, 28)).astype(np.float32)])  # out of range too
    out_frac = q.plan[q.graph.layers[q.graph.output].output_key].frac
    for inputs in (test_images.inputs[:300], random_inputs):
        a, b = sim.run(inputs), real.run(inputs)
        ia, ib = output_integers(a, out_frac), output_integers(b, out_frac)
        np.testing.assert_array_equal(ia, ib)
        assert np.abs(ia).max() > 0  # a non-trivial output
    # the widest accumulator the plan needs is reported and consistent with the chosen dtypes
    widest = max(a.bound.bits for a in q.arithmetic.values())
    assert widest <= (32 if bits <= 8 else 64)


@pytest.mark.parametrize("name", MODELS)
def test_8bit_uniform_within_one_point_of_float(prepared_models, calib_stats, test_images, name):
    q = _quantized(prepared_models, calib_stats, name, 8)
    x, y = test_images.inputs, test_images.labels
    float_out = tvm_fxp.Runner(tvm_fxp.build(q.prepared)).run(x)
    fxp_out = tvm_fxp.Runner(tvm_fxp.build(q.realized())).run(x)
    f, g = top1(float_out, y), top1(fxp_out, y)
    print(f"{name}: float {f:.4f} fxp8 {g:.4f} agreement {agreement(float_out, fxp_out):.4f} on {test_images.source}")
    assert f > 0.90                     # the reference model is a real classifier
    assert f - g <= 0.01
    assert agreement(float_out, fxp_out) > 0.97


def test_4bit_is_measurably_worse_than_8bit(prepared_models, calib_stats, test_images):
    """Quantization error is real: fewer bits, lower agreement with float (guards against a no-op realizer)."""
    x = test_images.inputs[:1000]
    prepared, _ = prepared_models["fmnist_vgg"]
    float_out = tvm_fxp.Runner(tvm_fxp.build(prepared)).run(x)
    agree = {}
    for bits in (3, 8):
        q = _quantized(prepared_models, calib_stats, "fmnist_vgg", bits)
        agree[bits] = agreement(float_out, tvm_fxp.Runner(tvm_fxp.build(q.realized())).run(x))
    assert agree[3] < agree[8] - 0.02, agree
