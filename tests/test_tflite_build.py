"""Models written by biometrics.tflite_build run in LiteRT and agree with numpy."""

from __future__ import annotations

import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter
from numpy.typing import NDArray
from scipy.signal import correlate

from biometrics.tflite_build import GraphBuilder

RNG = np.random.default_rng(3)


def run(model: bytes, x: NDArray[np.float32]) -> NDArray[np.float32]:
    interp = Interpreter(model_content=model, num_threads=1)
    interp.allocate_tensors()
    interp.set_tensor(interp.get_input_details()[0]["index"], x)
    interp.invoke()
    out: NDArray[np.float32] = interp.get_tensor(interp.get_output_details()[0]["index"])
    return out


def conv_same(x: NDArray[np.float32], w: NDArray[np.float32], b: NDArray[np.float32],
              stride: int) -> NDArray[np.float32]:  # fmt: skip
    """Reference NHWC convolution with TFLite's SAME padding (extra pad at the end)."""
    _, h, wd, _ = x.shape
    out_c, kh, kw, _ = w.shape
    oh, ow = -(-h // stride), -(-wd // stride)
    ph = max((oh - 1) * stride + kh - h, 0)
    pw = max((ow - 1) * stride + kw - wd, 0)
    xp = np.pad(x[0], ((ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)))
    out = np.empty((oh, ow, out_c), np.float32)
    for o in range(out_c):
        full = correlate(xp, w[o], mode="valid")[:, :, 0]
        out[:, :, o] = full[::stride, ::stride][:oh, :ow] + b[o]
    return out[None]


@pytest.mark.parametrize("stride", [1, 2])
def test_conv_relu_pool_mean_fc(stride: int) -> None:
    x = RNG.normal(size=(1, 23, 19, 2)).astype(np.float32)
    w1 = RNG.normal(size=(4, 3, 3, 2)).astype(np.float32)
    b1 = RNG.normal(size=4).astype(np.float32)
    w2 = RNG.normal(size=(3, 4)).astype(np.float32)
    b2 = RNG.normal(size=3).astype(np.float32)
    g = GraphBuilder()
    t = g.input("image", x.shape)
    t = g.conv2d(t, w1, b1, stride=stride, activation="relu")
    pooled = g.average_pool(t, 2, 2)
    t = g.mean(pooled, [1, 2])
    t = g.fully_connected(t, w2, b2)
    out = g.unary("logistic", t)
    got = run(g.build([out]), x)
    ref = np.maximum(conv_same(x, w1, b1, stride), 0)
    h2, w2_ = ref.shape[1] // 2, ref.shape[2] // 2
    pooled_ref = ref[:, : h2 * 2, : w2_ * 2].reshape(1, h2, 2, w2_, 2, 4).mean(axis=(2, 4))
    ref_out = 1 / (1 + np.exp(-(pooled_ref.mean(axis=(1, 2)) @ w2.T + b2)))
    np.testing.assert_allclose(got, ref_out, rtol=1e-4, atol=1e-5)


def test_elementwise_and_shapes() -> None:
    x = RNG.uniform(0.5, 2.0, size=(1, 6)).astype(np.float32)
    g = GraphBuilder()
    t = g.input("x", x.shape)
    c = g.constant("c", np.array([1.5], dtype=np.float32))
    sq = g.binary("mul", t, t)
    ratio = g.binary("div", g.binary("add", sq, c), g.unary("sqrt", t))
    diff = g.binary("sub", ratio, t)
    both = g.concat([g.unary("relu", diff), t], axis=1)
    out = g.reshape(both, [1, 3, 4])
    got = run(g.build([out]), x)
    ref = np.concatenate([np.maximum((x * x + 1.5) / np.sqrt(x) - x, 0), x], axis=1)
    np.testing.assert_allclose(got, ref.reshape(1, 3, 4), rtol=1e-5)


def test_log() -> None:
    x = RNG.uniform(1e-4, 50.0, size=(1, 2, 3, 4)).astype(np.float32)
    g = GraphBuilder()
    out = g.unary("log", g.input("x", x.shape))
    np.testing.assert_allclose(run(g.build([out]), x), np.log(x), rtol=1e-5, atol=1e-6)


def test_depthwise() -> None:
    x = RNG.normal(size=(1, 9, 9, 3)).astype(np.float32)
    w = RNG.normal(size=(1, 3, 3, 3)).astype(np.float32)
    b = np.zeros(3, np.float32)
    g = GraphBuilder()
    out = g.depthwise_conv2d(g.input("x", x.shape), w, b)
    got = run(g.build([out]), x)
    ref = np.concatenate(
        [conv_same(x[..., c : c + 1], w[..., c : c + 1].transpose(3, 1, 2, 0), b[c : c + 1], 1)
         for c in range(3)], axis=3,
    )  # fmt: skip
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)


def test_shape_mismatch_is_refused() -> None:
    g = GraphBuilder()
    t = g.input("x", (1, 8, 8, 1))
    with pytest.raises(ValueError, match="channels"):
        g.conv2d(t, np.zeros((2, 3, 3, 2), np.float32), np.zeros(2, np.float32))
