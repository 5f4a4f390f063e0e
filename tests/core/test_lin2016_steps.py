"""Lin 2016's power-of-two steps (numpy only): the weight-step and activation-error variants against the data."""

import math

import numpy as np
import pytest

from tvm_fxp.methods.lin2016 import (Lin2016, activation_mse, fit_distribution, optimal_step, quantizer_mse,
                                     sqnr_weight_format)
from tvm_fxp.methods.uniform import MethodError
from tvm_fxp.statistics import TensorStats


def test_measured_weight_step_is_the_neighbouring_power_of_two_with_less_error():
    """Uniform weights with a few outliers fit 'uniform' (kurtosis ~1.8), whose optimal step clips the outliers;
    of the two powers of two around that step the coarser one quantizes these weights with less error."""
    rng = np.random.default_rng(0)
    w = rng.uniform(-1, 1, 4000)
    w[:8] = [1.6, -1.6, 1.5, -1.5, 1.4, -1.4, 1.3, -1.3]
    assert fit_distribution(w) == "uniform"
    for bits in (4, 6, 8):
        t = -math.log2(optimal_step("uniform", bits) * w.std())
        fitted, measured = sqnr_weight_format(w, bits), sqnr_weight_format(w, bits, "measured")
        assert fitted.frac == round(t) and measured.frac in (math.floor(t), math.ceil(t))
        err = {f: quantizer_mse(w, 2.0 ** -f, bits) for f in (math.floor(t), math.ceil(t))}
        assert quantizer_mse(w, 2.0 ** -measured.frac, bits) == min(err.values())
    assert [sqnr_weight_format(w, b).frac for b in (6, 8)] == [5, 7]
    assert [sqnr_weight_format(w, b, "measured").frac for b in (6, 8)] == [4, 6]


def test_bin_averaged_activation_error_matches_the_data():
    """On log-uniform magnitudes the error averaged through each histogram bin is within 3% of the error on the
    samples themselves for every step; at the bins' centres it is 15-30% off where the values are in range."""
    rng = np.random.default_rng(1)
    x = np.exp2(rng.uniform(-3, 2, 200_000))
    stats = TensorStats()
    stats.update(x.reshape(1, 1, -1))
    for frac in range(4, 10):
        true = quantizer_mse(x, 2.0 ** -frac, 8, False)
        assert activation_mse(stats, 8, frac, "bins") == pytest.approx(true, rel=0.03)
        if frac <= 6:                    # every value in range: the rounding error alone
            assert not activation_mse(stats, 8, frac, "centers") == pytest.approx(true, rel=0.15)


def test_variant_names_are_checked():
    with pytest.raises(MethodError, match="weight_step must be 'fitted' or 'measured'"):
        Lin2016(weight_step="mse")
    with pytest.raises(MethodError, match="act_error 'centers' or 'bins'"):
        Lin2016(act_error="exact")
