"""``tvm-fxp finetune``: the plan's formats in the forward pass, trained on the bundled subset's training images,
selected on its validation images, written as ``quantize`` writes it and realized bit-exact."""

import json
import os

import numpy as np
import pytest

from tvm_fxp import datasets
from tvm_fxp.cli import SUMMARY_KEYS, main
from conftest import model_path

try:
    import torch  # the `train` extra, installed by .ci/setup.sh
except ImportError:
    if os.environ.get("CI") == "true":      # CI must run it: a missing extra fails the suite rather than skipping
        raise
    pytest.skip("the `train` extra (torch) is not installed: pip install -e '.[train]'", allow_module_level=True)


# three TVM builds (quantize, finetune's quantize) and a short PyTorch epoch: ~45 s on 2 cores
def test_finetune_one_short_epoch_lowers_the_loss_and_stays_bit_exact(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(datasets, "DEBIAN_DIR", "/nonexistent")        # the bundled subset: fast and offline
    base, tuned = tmp_path / "u4", tmp_path / "u4ft"
    common = ["--calib-size", "128", "--eval-size", "300", "--quiet"]
    assert main(["quantize", str(model_path("fmnist_vgg")), "--calib", "fashion-mnist", "--method", "uniform",
                 "--bits", "4", "--out", str(base)] + common) == 0, capsys.readouterr().err
    # the training forward is the deployed arithmetic: bit for bit the simulation of the plan (rounding half
    # away from zero; fixed-point values hit exact ties often)
    import onnx
    import tvm_fxp
    from tvm_fxp import deploy
    from tvm_fxp.finetune import QuantNet, fold_batchnorm

    q, _ = deploy.load_quantized_dir(base)
    net = QuantNet(fold_batchnorm(onnx.load(str(base / "source.onnx"))), q.graph, q.plan)
    x = datasets.fashion_mnist("val", limit=64).inputs
    with torch.no_grad():
        trained_forward = net(torch.from_numpy(x)).numpy()
    np.testing.assert_array_equal(trained_forward, tvm_fxp.Runner(tvm_fxp.build(q.simulated())).run(x))
    code = main(["finetune", str(base), "--data", "fashion-mnist", "--epochs", "1", "--train-batch", "64",
                 "--val-size", "300", "--threads", "2", "--out", str(tuned)] + common[2:])
    err = capsys.readouterr().err
    assert code == 0, err
    for f in ("plan.json", "model.so", "summary.json", "report.md", "finetuned.onnx", "finetune_state.pt"):
        assert (tuned / f).stat().st_size > 0, f
    s = json.loads((tuned / "summary.json").read_text())
    before = json.loads((base / "summary.json").read_text())
    assert set(SUMMARY_KEYS) <= set(s) and s["bit_exact"] is True and s["float_ops_in_integer_graph"] == 0
    ft = s["finetune"]
    assert ft["train_images"] == 500 and "epoch 1/1: loss" in err
    assert ft["train_loss_after"] < ft["train_loss_before"], ft
    assert ft["val_top1_after"] >= ft["val_top1_before"] and ft["best_epoch"] == 1, ft
    # the same widths (every tensor 4 bits, same signedness); the clipping points (fracs) re-derived from the
    # weights before training, recorded; a bias never finer than its layer's accumulator
    old, new = (json.loads((d / "plan.json").read_text())["tensors"] for d in (base, tuned))
    assert {k: (v["bits"], v["signed"]) for k, v in old.items()} == {k: (v["bits"], v["signed"]) for k, v in new.items()}
    (refit,) = ft["refits"]
    assert refit["epoch"] == 0 and refit["changed"] and "formats re-derived" in err
    assert all(new[k]["frac"] == v[1] and old[k]["frac"] == v[0] for k, v in refit["changed"].items()
               if not k.endswith(".bias")), refit
    layers = json.loads((tuned / "plan.json").read_text())["layers"]
    checked = 0
    for name, info in layers.items():
        if f"{name}.bias" in new:
            src = info["inputs"][0]
            x_key = "input" if src == "input" else f"{src}.output"
            assert new[f"{name}.bias"]["frac"] <= new[x_key]["frac"] + new[f"{name}.weight"]["frac"], name
            checked += 1
    assert checked == 6
    assert s["weight_bits"] == before["weight_bits"] and s["fxp_top1"] > before["fxp_top1"], (s, before)
    # a second call with more epochs resumes after the checkpointed one
    code = main(["finetune", str(base), "--epochs", "2", "--train-batch", "64", "--val-size", "300",
                 "--steps-per-epoch", "2", "--out", str(tuned)] + common[2:])
    err = capsys.readouterr().err
    assert code == 0 and "resuming after epoch 1 of 2" in err and "epoch 2/2: loss" in err, err
    assert "epoch 1/2" not in err
    # knowledge distillation (--distill): the teacher is the float model handed in (its logits those of
    # onnxruntime on source.onnx), stays frozen, and four steps of the pure distillation loss move the
    # student's softmax towards it (the checkpoint's weights: the last epoch whatever the selection keeps)
    import onnxruntime as ort
    import torch.nn.functional as F
    from tvm_fxp.finetune import STATE, train

    teacher = QuantNet(fold_batchnorm(onnx.load(str(base / "source.onnx"))), q.graph, q.plan)
    sess = ort.InferenceSession(str(base / "source.onnx"))
    with torch.no_grad():
        np.testing.assert_allclose(teacher(torch.from_numpy(x), quantized=False).numpy(),
                                   sess.run(None, {sess.get_inputs()[0].name: x})[0], rtol=1e-4, atol=1e-4)
    tr = datasets.fashion_mnist("train", limit=256)
    xt = torch.from_numpy(tr.inputs)

    def kl():
        with torch.no_grad():
            return float(F.kl_div(F.log_softmax(net(xt), 1), F.log_softmax(teacher(xt, quantized=False), 1),
                                  reduction="batchmean", log_target=True))

    w0, kl0 = teacher.state(), kl()
    (tmp_path / "kd").mkdir()
    train(net, tr, datasets.fashion_mnist("val", limit=64), 1, tmp_path / "kd", 5e-4, 64, 0, False, 4, 2,
          False, teacher, 1.0, 1.0)
    net.load_state(torch.load(tmp_path / "kd" / STATE, weights_only=False)["weights"])
    assert kl() < 0.8 * kl0, (kl0, kl())
    assert all(np.array_equal(w0[k], v) for k, v in teacher.state().items())
