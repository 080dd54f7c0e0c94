"""Write small float32 TFLite models from numpy weights.

The station runs its models with LiteRT (ai-edge-litert), which reads the TFLite flatbuffer.
Our own small models (the station's fingerprint quality predictor) are trained with
numpy/scipy, so we write the flatbuffer directly with the schema bindings of the ``tflite``
package instead of installing TensorFlow to convert them. Tests check every supported
operator against a numpy reference through the LiteRT interpreter.

Supported: CONV_2D and DEPTHWISE_CONV_2D (NHWC, weights [out, kh, kw, in] / [1, kh, kw, c]),
AVERAGE_POOL_2D, MEAN, FULLY_CONNECTED (weights [out, in]), ADD, SUB, MUL, DIV, SQRT,
LOG, LOGISTIC, RELU, RESHAPE, CONCATENATION.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import flatbuffers
import numpy as np
import tflite
from numpy.typing import NDArray

_ACT = {None: 0, "relu": 1, "relu6": 3}
_PAD = {"same": 0, "valid": 1}


@dataclass
class _Tensor:
    name: str
    shape: tuple[int, ...]
    data: bytes | None  # constant data (float32 / int32 little-endian) or None
    dtype: int = tflite.TensorType.FLOAT32


@dataclass
class _Op:
    code: int
    inputs: list[int]
    outputs: list[int]
    options_type: int = 0
    options: dict[str, int | float | bool | list[int]] = field(default_factory=dict)


class GraphBuilder:
    """A single-subgraph float32 model, built op by op. Returns tensor indices."""

    def __init__(self) -> None:
        self._tensors: list[_Tensor] = []
        self._ops: list[_Op] = []
        self._inputs: list[int] = []

    # --- tensors -------------------------------------------------------------------------

    def input(self, name: str, shape: Sequence[int]) -> int:
        index = self._tensor(name, tuple(shape), None)
        self._inputs.append(index)
        return index

    def constant(self, name: str, value: NDArray[np.floating] | NDArray[np.integer]) -> int:
        if np.issubdtype(value.dtype, np.integer):
            arr = np.ascontiguousarray(value, dtype="<i4")
            return self._tensor(name, arr.shape, arr.tobytes(), tflite.TensorType.INT32)
        arr32 = np.ascontiguousarray(value, dtype="<f4")
        return self._tensor(name, arr32.shape, arr32.tobytes())

    def _tensor(
        self, name: str, shape: tuple[int, ...], data: bytes | None,
        dtype: int = tflite.TensorType.FLOAT32,
    ) -> int:  # fmt: skip
        self._tensors.append(_Tensor(name, shape, data, dtype))
        return len(self._tensors) - 1

    def shape(self, index: int) -> tuple[int, ...]:
        return self._tensors[index].shape

    def _out(self, name: str, shape: Sequence[int]) -> int:
        return self._tensor(name, tuple(int(s) for s in shape), None)

    # --- operators -----------------------------------------------------------------------

    def conv2d(
        self, x: int, weights: NDArray[np.floating], bias: NDArray[np.floating], *,
        stride: int = 1, padding: str = "same", activation: str | None = None, name: str = "conv",
    ) -> int:  # fmt: skip
        n, h, w, c = self.shape(x)
        out_c, kh, kw, in_c = weights.shape
        if in_c != c:
            raise ValueError(f"{name}: weights take {in_c} channels, input has {c}")
        oh, ow = _out_size(h, kh, stride, padding), _out_size(w, kw, stride, padding)
        out = self._out(name, (n, oh, ow, out_c))
        self._ops.append(_Op(
            tflite.BuiltinOperator.CONV_2D,
            [x, self.constant(f"{name}/w", weights), self.constant(f"{name}/b", bias)], [out],
            tflite.BuiltinOptions.Conv2DOptions,
            {"padding": _PAD[padding], "stride": stride, "act": _ACT[activation]},
        ))  # fmt: skip
        return out

    def depthwise_conv2d(
        self, x: int, weights: NDArray[np.floating], bias: NDArray[np.floating], *,
        stride: int = 1, padding: str = "same", activation: str | None = None,
        name: str = "dwconv",
    ) -> int:  # fmt: skip
        n, h, w, c = self.shape(x)
        _, kh, kw, out_c = weights.shape
        oh, ow = _out_size(h, kh, stride, padding), _out_size(w, kw, stride, padding)
        out = self._out(name, (n, oh, ow, out_c))
        self._ops.append(_Op(
            tflite.BuiltinOperator.DEPTHWISE_CONV_2D,
            [x, self.constant(f"{name}/w", weights), self.constant(f"{name}/b", bias)], [out],
            tflite.BuiltinOptions.DepthwiseConv2DOptions,
            {"padding": _PAD[padding], "stride": stride, "act": _ACT[activation],
             "multiplier": out_c // c},
        ))  # fmt: skip
        return out

    def average_pool(self, x: int, size: int, stride: int, *, name: str = "avgpool") -> int:
        n, h, w, c = self.shape(x)
        out = self._out(name, (n, _out_size(h, size, stride, "valid"),
                               _out_size(w, size, stride, "valid"), c))  # fmt: skip
        self._ops.append(_Op(
            tflite.BuiltinOperator.AVERAGE_POOL_2D, [x], [out],
            tflite.BuiltinOptions.Pool2DOptions,
            {"padding": _PAD["valid"], "stride": stride, "filter": size, "act": 0},
        ))  # fmt: skip
        return out

    def mean(self, x: int, axes: Sequence[int], *, name: str = "mean") -> int:
        shape = [s for i, s in enumerate(self.shape(x)) if i not in set(axes)]
        out = self._out(name, shape)
        axes_t = self.constant(f"{name}/axes", np.array(list(axes), dtype=np.int32))
        reducer = tflite.BuiltinOptions.ReducerOptions
        self._ops.append(
            _Op(tflite.BuiltinOperator.MEAN, [x, axes_t], [out], reducer, {"keep_dims": False})
        )
        return out

    def fully_connected(
        self, x: int, weights: NDArray[np.floating], bias: NDArray[np.floating], *,
        activation: str | None = None, name: str = "fc",
    ) -> int:  # fmt: skip
        out_n, in_n = weights.shape
        if self.shape(x)[-1] != in_n:
            raise ValueError(f"{name}: weights take {in_n} inputs, got {self.shape(x)}")
        out = self._out(name, (*self.shape(x)[:-1], out_n))
        self._ops.append(_Op(
            tflite.BuiltinOperator.FULLY_CONNECTED,
            [x, self.constant(f"{name}/w", weights), self.constant(f"{name}/b", bias)], [out],
            tflite.BuiltinOptions.FullyConnectedOptions, {"act": _ACT[activation]},
        ))  # fmt: skip
        return out

    def binary(self, kind: str, a: int, b: int, *, name: str = "") -> int:
        """Elementwise ``add``/``sub``/``mul``/``div`` with numpy broadcasting."""
        codes = {
            "add": (tflite.BuiltinOperator.ADD, tflite.BuiltinOptions.AddOptions),
            "sub": (tflite.BuiltinOperator.SUB, tflite.BuiltinOptions.SubOptions),
            "mul": (tflite.BuiltinOperator.MUL, tflite.BuiltinOptions.MulOptions),
            "div": (tflite.BuiltinOperator.DIV, tflite.BuiltinOptions.DivOptions),
        }
        shape = np.broadcast_shapes(self.shape(a), self.shape(b))
        out = self._out(name or kind, shape)
        code, options = codes[kind]
        self._ops.append(_Op(code, [a, b], [out], options, {"act": 0}))
        return out

    def unary(self, kind: str, x: int, *, name: str = "") -> int:
        """``sqrt``, ``log`` (natural), ``logistic`` or ``relu``."""
        code = {"sqrt": tflite.BuiltinOperator.SQRT, "log": tflite.BuiltinOperator.LOG,
                "logistic": tflite.BuiltinOperator.LOGISTIC,
                "relu": tflite.BuiltinOperator.RELU}[kind]  # fmt: skip
        out = self._out(name or kind, self.shape(x))
        self._ops.append(_Op(code, [x], [out]))
        return out

    def reshape(self, x: int, shape: Sequence[int], *, name: str = "reshape") -> int:
        out = self._out(name, shape)
        target = self.constant(f"{name}/shape", np.array(list(shape), dtype=np.int32))
        self._ops.append(_Op(tflite.BuiltinOperator.RESHAPE, [x, target], [out]))
        return out

    def concat(self, xs: Sequence[int], axis: int, *, name: str = "concat") -> int:
        shapes = [self.shape(x) for x in xs]
        shape = list(shapes[0])
        shape[axis] = sum(s[axis] for s in shapes)
        out = self._out(name, shape)
        self._ops.append(_Op(tflite.BuiltinOperator.CONCATENATION, list(xs), [out],
                             tflite.BuiltinOptions.ConcatenationOptions,
                             {"axis": axis, "act": 0}))  # fmt: skip
        return out

    # --- serialisation -------------------------------------------------------------------

    def build(self, outputs: Sequence[int], description: str = "vn-eid") -> bytes:
        b = flatbuffers.Builder(1024)
        buffers = [_buffer(b, None)] + [_buffer(b, t.data) for t in self._tensors if t.data]
        tensor_offsets = []
        next_buffer = 1
        for t in self._tensors:
            name = b.CreateString(t.name)
            shape = _int_vector(b, t.shape)
            tflite.TensorStart(b)
            tflite.TensorAddShape(b, shape)
            tflite.TensorAddType(b, t.dtype)
            tflite.TensorAddName(b, name)
            if t.data:
                tflite.TensorAddBuffer(b, next_buffer)
                next_buffer += 1
            else:
                tflite.TensorAddBuffer(b, 0)
            tensor_offsets.append(tflite.TensorEnd(b))
        codes = sorted({op.code for op in self._ops})
        op_offsets = [self._operator(b, op, codes.index(op.code)) for op in self._ops]
        tensors_vec = _offset_vector(b, tensor_offsets)
        ops_vec = _offset_vector(b, op_offsets)
        inputs_vec = _int_vector(b, self._inputs)
        outputs_vec = _int_vector(b, list(outputs))
        sg_name = b.CreateString("main")
        tflite.SubGraphStart(b)
        tflite.SubGraphAddTensors(b, tensors_vec)
        tflite.SubGraphAddInputs(b, inputs_vec)
        tflite.SubGraphAddOutputs(b, outputs_vec)
        tflite.SubGraphAddOperators(b, ops_vec)
        tflite.SubGraphAddName(b, sg_name)
        subgraph = tflite.SubGraphEnd(b)
        code_offsets = []
        for code in codes:
            tflite.OperatorCodeStart(b)
            tflite.OperatorCodeAddDeprecatedBuiltinCode(b, min(code, 127))
            tflite.OperatorCodeAddBuiltinCode(b, code)
            tflite.OperatorCodeAddVersion(b, 1)
            code_offsets.append(tflite.OperatorCodeEnd(b))
        codes_vec = _offset_vector(b, code_offsets)
        subgraphs_vec = _offset_vector(b, [subgraph])
        buffers_vec = _offset_vector(b, buffers)
        desc = b.CreateString(description)
        tflite.ModelStart(b)
        tflite.ModelAddVersion(b, 3)
        tflite.ModelAddOperatorCodes(b, codes_vec)
        tflite.ModelAddSubgraphs(b, subgraphs_vec)
        tflite.ModelAddDescription(b, desc)
        tflite.ModelAddBuffers(b, buffers_vec)
        model = tflite.ModelEnd(b)
        b.Finish(model, file_identifier=b"TFL3")
        return bytes(b.Output())

    def _operator(self, b: flatbuffers.Builder, op: _Op, code_index: int) -> int:
        options = _options(b, op) if op.options_type else None
        inputs = _int_vector(b, op.inputs)
        outputs = _int_vector(b, op.outputs)
        tflite.OperatorStart(b)
        tflite.OperatorAddOpcodeIndex(b, code_index)
        tflite.OperatorAddInputs(b, inputs)
        tflite.OperatorAddOutputs(b, outputs)
        if options is not None:
            tflite.OperatorAddBuiltinOptionsType(b, op.options_type)
            tflite.OperatorAddBuiltinOptions(b, options)
        return int(tflite.OperatorEnd(b))


def _out_size(size: int, kernel: int, stride: int, padding: str) -> int:
    if padding == "same":
        return -(-size // stride)
    return (size - kernel) // stride + 1


def _int_vector(b: flatbuffers.Builder, values: Sequence[int]) -> int:
    b.StartVector(4, len(values), 4)
    for v in reversed(values):
        b.PrependInt32(int(v))
    return int(b.EndVector())


def _offset_vector(b: flatbuffers.Builder, offsets: Sequence[int]) -> int:
    b.StartVector(4, len(offsets), 4)
    for off in reversed(offsets):
        b.PrependUOffsetTRelative(off)
    return int(b.EndVector())


def _buffer(b: flatbuffers.Builder, data: bytes | None) -> int:
    vec = None
    if data:
        # 16-byte alignment lets LiteRT map weights without copying.
        b.StartVector(1, len(data), 16)
        b.head = b.head - len(data)
        b.Bytes[b.head : b.head + len(data)] = data
        vec = b.EndVector()
    tflite.BufferStart(b)
    if vec is not None:
        tflite.BufferAddData(b, vec)
    return int(tflite.BufferEnd(b))


def _options(b: flatbuffers.Builder, op: _Op) -> int:
    o = op.options
    t = op.options_type
    opts = tflite.BuiltinOptions
    if t == opts.Conv2DOptions:
        tflite.Conv2DOptionsStart(b)
        tflite.Conv2DOptionsAddPadding(b, o["padding"])
        tflite.Conv2DOptionsAddStrideW(b, o["stride"])
        tflite.Conv2DOptionsAddStrideH(b, o["stride"])
        tflite.Conv2DOptionsAddDilationWFactor(b, 1)
        tflite.Conv2DOptionsAddDilationHFactor(b, 1)
        tflite.Conv2DOptionsAddFusedActivationFunction(b, o["act"])
        return int(tflite.Conv2DOptionsEnd(b))
    if t == opts.DepthwiseConv2DOptions:
        tflite.DepthwiseConv2DOptionsStart(b)
        tflite.DepthwiseConv2DOptionsAddPadding(b, o["padding"])
        tflite.DepthwiseConv2DOptionsAddStrideW(b, o["stride"])
        tflite.DepthwiseConv2DOptionsAddStrideH(b, o["stride"])
        tflite.DepthwiseConv2DOptionsAddDepthMultiplier(b, o["multiplier"])
        tflite.DepthwiseConv2DOptionsAddDilationWFactor(b, 1)
        tflite.DepthwiseConv2DOptionsAddDilationHFactor(b, 1)
        tflite.DepthwiseConv2DOptionsAddFusedActivationFunction(b, o["act"])
        return int(tflite.DepthwiseConv2DOptionsEnd(b))
    if t == opts.Pool2DOptions:
        tflite.Pool2DOptionsStart(b)
        tflite.Pool2DOptionsAddPadding(b, o["padding"])
        tflite.Pool2DOptionsAddStrideW(b, o["stride"])
        tflite.Pool2DOptionsAddStrideH(b, o["stride"])
        tflite.Pool2DOptionsAddFilterWidth(b, o["filter"])
        tflite.Pool2DOptionsAddFilterHeight(b, o["filter"])
        tflite.Pool2DOptionsAddFusedActivationFunction(b, o["act"])
        return int(tflite.Pool2DOptionsEnd(b))
    if t == opts.ReducerOptions:
        tflite.ReducerOptionsStart(b)
        tflite.ReducerOptionsAddKeepDims(b, bool(o["keep_dims"]))
        return int(tflite.ReducerOptionsEnd(b))
    if t == opts.FullyConnectedOptions:
        tflite.FullyConnectedOptionsStart(b)
        tflite.FullyConnectedOptionsAddFusedActivationFunction(b, o["act"])
        return int(tflite.FullyConnectedOptionsEnd(b))
    if t == opts.ConcatenationOptions:
        tflite.ConcatenationOptionsStart(b)
        tflite.ConcatenationOptionsAddAxis(b, o["axis"])
        tflite.ConcatenationOptionsAddFusedActivationFunction(b, o["act"])
        return int(tflite.ConcatenationOptionsEnd(b))
    simple = {
        opts.AddOptions: (tflite.AddOptionsStart, tflite.AddOptionsAddFusedActivationFunction,
                          tflite.AddOptionsEnd),
        opts.SubOptions: (tflite.SubOptionsStart, tflite.SubOptionsAddFusedActivationFunction,
                          tflite.SubOptionsEnd),
        opts.MulOptions: (tflite.MulOptionsStart, tflite.MulOptionsAddFusedActivationFunction,
                          tflite.MulOptionsEnd),
        opts.DivOptions: (tflite.DivOptionsStart, tflite.DivOptionsAddFusedActivationFunction,
                          tflite.DivOptionsEnd),
    }  # fmt: skip
    start, add_act, end = simple[t]
    start(b)
    add_act(b, o["act"])
    return int(end(b))
