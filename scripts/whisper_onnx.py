"""Whisper encoder/decoder as ONNX graphs, built op by op from numpy weights.

Every block is a small function taking a `GraphBuilder`, a name prefix, input
tensor names and numpy weights, and returning output tensor names, so other
exporters (scripts/rknn_export.py: static shapes, 1x1 Conv projections) can
assemble variants from the same pieces. Weight names follow CTranslate2's
Whisper spec (`encoder/layer_0/self_attention/linear_0/weight`, ...).

Graph I/O is the contract in edge/asr/whisper/graph.py. Numerics follow Whisper:
pre-LN blocks, exact (erf) GELU, attention scale dh^-0.5 (folded into the
query projection, so cross_k is the plain key projection), sinusoidal encoder
positions sliced to T, learned decoder positions sliced at the cache length.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Mapping

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edge.asr.whisper.graph import cross_input, cross_inputs

OPSET = 17
LN_EPSILON = 1e-5
MASK_VALUE = -1e9  # not -inf: keeps the mask finite and harmless if an engine runs it in fp16

Weights = Mapping[str, np.ndarray]


@dataclass(frozen=True)
class Dims:
    """Model hyper-parameters, named as in OpenAI Whisper (and the manifest)."""

    n_mels: int
    n_audio_ctx: int
    n_audio_state: int
    n_audio_head: int
    n_audio_layer: int
    n_vocab: int
    n_text_ctx: int
    n_text_state: int
    n_text_head: int
    n_text_layer: int

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


# What the graphs below are written for, in CTranslate2's own flags (read off tiny.en's and base's
# model.bin): GELU (activation id 3), pre-norm layers, no ALiBi, embeddings neither scaled nor zero-started.
WHISPER_FLAGS = {"decoder/activation": 3, "decoder/alibi": 0, "decoder/pre_norm": 1,
                 "decoder/scale_embeddings": 0, "decoder/start_from_zero_embedding": 0}


def weights_problem(spec: str, weights: Weights) -> str | None:
    """Why these are not the float Whisper weights the graphs are written for, or None. Another source
    (a quantized CTranslate2 model: int8 matrices read as floats, their `*_scale`s ignored) would
    otherwise build graphs that load and say nonsense."""
    if spec != "WhisperSpec":
        return f"its CTranslate2 spec is {spec!r}, not WhisperSpec"
    for name, expected in WHISPER_FLAGS.items():
        value = weights.get(name)
        if value is None or value.size != 1 or int(value.reshape(-1)[0]) != expected:
            found = "missing" if value is None else value.reshape(-1)[:4].tolist()
            return f"{name} is {found}, where the graphs are written for {expected}"
    scaled = sorted(name for name in weights if name.endswith("_scale"))
    if scaled:
        return f"it is quantized ({scaled[0]} and {len(scaled) - 1} more scales): use a float16 or float32 model"
    integral = sorted(name for name, array in weights.items() if array.ndim >= 2 and array.dtype.kind != "f")
    if integral:
        return f"{integral[0]} holds {weights[integral[0]].dtype} values, not floats: use a float16 or float32 model"
    return None


def _count_layers(weights: Weights, stack: str) -> int:
    pattern = re.compile(rf"{stack}/layer_(\d+)/")
    return len({match.group(1) for match in map(pattern.match, weights) if match})


def dims_from_weights(weights: Weights) -> Dims:
    """Read the dimensions off the tensor shapes, so no constant can drift from the weights."""
    n_audio_ctx, n_audio_state = weights["encoder/position_encodings/encodings"].shape
    n_text_ctx, n_text_state = weights["decoder/position_encodings/encodings"].shape
    return Dims(
        n_mels=int(weights["encoder/conv1/weight"].shape[1]),
        n_audio_ctx=int(n_audio_ctx),
        n_audio_state=int(n_audio_state),
        n_audio_head=int(weights["encoder/num_heads"]),
        n_audio_layer=_count_layers(weights, "encoder"),
        n_vocab=int(weights["decoder/embeddings/weight"].shape[0]),
        n_text_ctx=int(n_text_ctx),
        n_text_state=int(n_text_state),
        n_text_head=int(weights["decoder/num_heads"]),
        n_text_layer=_count_layers(weights, "decoder"),
    )


class GraphBuilder:
    """Collects nodes and initializers; generates unique tensor names.

    `linear_as_conv` makes `linear()` emit 1x1 Conv instead of MatMul: the RKNN
    converter rejects MatMul of a 3-D activation by a constant but takes Conv.
    """

    def __init__(self, *, linear_as_conv: bool = False) -> None:
        self.linear_as_conv = linear_as_conv
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: dict[str, onnx.TensorProto] = {}
        self._used: set[str] = set()

    def _unique(self, base: str) -> str:
        name, index = base, 1
        while name in self._used:
            index += 1
            name = f"{base}_{index}"
        self._used.add(name)
        return name

    def const(self, name: str, array: np.ndarray) -> str:
        """Add an initializer (float arrays are stored as float32)."""
        array = np.asarray(array)
        if array.dtype.kind == "f":
            array = array.astype(np.float32)
        unique = self._unique(name)
        self.initializers[unique] = numpy_helper.from_array(np.array(array, order="C"), unique)
        return unique

    def op(self, op_type: str, inputs: list[str], prefix: str, *, outputs: int = 1, **attrs) -> str | list[str]:
        """Append a node; returns its output name (or names when outputs > 1)."""
        node_name = self._unique(f"{prefix}/{op_type}")
        names = [node_name if outputs == 1 else f"{node_name}:{i}" for i in range(outputs)]
        self.nodes.append(helper.make_node(op_type, inputs, names, name=node_name, **attrs))
        return names[0] if outputs == 1 else names

    def model(self, name: str, inputs: list[onnx.ValueInfoProto], outputs: list[onnx.ValueInfoProto]) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, name, inputs, outputs, list(self.initializers.values()))
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="edge-asr")
        model.ir_version = 8  # opset 17 runtimes from onnxruntime 1.13 on read IR 8
        return model


def _f32(array: np.ndarray) -> np.ndarray:
    return np.asarray(array, dtype=np.float32)


# ---------------------------------------------------------------- basic blocks


def linear(g: GraphBuilder, prefix: str, x: str, weight: np.ndarray, bias: np.ndarray | None) -> str:
    """y = x @ weight^T + bias over the last axis of a [B, T, C] tensor (weight is [out, in])."""
    if g.linear_as_conv:
        return _linear_conv(g, prefix, x, weight, bias)
    y = g.op("MatMul", [x, g.const(f"{prefix}/weight_t", _f32(weight).T)], prefix)
    if bias is None:
        return y
    return g.op("Add", [y, g.const(f"{prefix}/bias", bias)], prefix)


def _linear_conv(g: GraphBuilder, prefix: str, x: str, weight: np.ndarray, bias: np.ndarray | None) -> str:
    """The same projection as a 1x1 Conv on the channels-first view [B, C, T]."""
    channels_first = g.op("Transpose", [x], prefix, perm=[0, 2, 1])
    inputs = [channels_first, g.const(f"{prefix}/weight_conv", _f32(weight)[:, :, None])]
    if bias is not None:
        inputs.append(g.const(f"{prefix}/bias", bias))
    y = g.op("Conv", inputs, prefix, kernel_shape=[1])
    return g.op("Transpose", [y], prefix, perm=[0, 2, 1])


def layer_norm(g: GraphBuilder, prefix: str, x: str, gamma: np.ndarray, beta: np.ndarray) -> str:
    scale, bias = g.const(f"{prefix}/gamma", gamma), g.const(f"{prefix}/beta", beta)
    return g.op("LayerNormalization", [x, scale, bias], prefix, axis=-1, epsilon=LN_EPSILON)


def gelu(g: GraphBuilder, prefix: str, x: str) -> str:
    """Exact GELU, 0.5 x (1 + erf(x / sqrt 2)): opset 17 has no Gelu op; ORT fuses this pattern."""
    scaled = g.op("Div", [x, g.const(f"{prefix}/sqrt2", np.array(np.sqrt(2.0), np.float32))], prefix)
    one_plus = g.op("Add", [g.op("Erf", [scaled], prefix), g.const(f"{prefix}/one", np.array(1.0, np.float32))], prefix)
    half_x = g.op("Mul", [x, g.const(f"{prefix}/half", np.array(0.5, np.float32))], prefix)
    return g.op("Mul", [half_x, one_plus], prefix)


def split_heads(g: GraphBuilder, prefix: str, x: str, heads: int) -> str:
    """[B, T, H*D] -> [B, H, T, D]."""
    shape = g.const(f"{prefix}/heads_shape", np.array([0, 0, heads, -1], np.int64))
    return g.op("Transpose", [g.op("Reshape", [x, shape], prefix)], prefix, perm=[0, 2, 1, 3])


def merge_heads(g: GraphBuilder, prefix: str, x: str) -> str:
    """[B, H, T, D] -> [B, T, H*D]."""
    moved = g.op("Transpose", [x], prefix, perm=[0, 2, 1, 3])
    return g.op("Reshape", [moved, g.const(f"{prefix}/merge_shape", np.array([0, 0, -1], np.int64))], prefix)


def attention(g: GraphBuilder, prefix: str, q: str, k: str, v: str, mask: str | None = None) -> str:
    """softmax(q k^T + mask) v on [B, H, N, D] tensors; the scale is already folded into q."""
    k_t = g.op("Transpose", [k], prefix, perm=[0, 1, 3, 2])
    scores = g.op("MatMul", [q, k_t], prefix)
    if mask is not None:
        scores = g.op("Add", [scores, mask], prefix)
    return g.op("MatMul", [g.op("Softmax", [scores], prefix, axis=-1), v], prefix)


def residual(g: GraphBuilder, prefix: str, x: str, y: str) -> str:
    return g.op("Add", [x, y], prefix)


def fused_projection(g: GraphBuilder, prefix: str, x: str, w: Weights, parts: int, scale_first: float) -> list[str]:
    """One linear for `parts` stacked projections (QKV or KV), split after; the first part is scaled."""
    weight, bias = _f32(w[f"{prefix}/weight"]).copy(), _f32(w[f"{prefix}/bias"]).copy()
    rows = weight.shape[0] // parts
    weight[:rows] *= scale_first
    bias[:rows] *= scale_first
    y = linear(g, prefix, x, weight, bias)
    return g.op("Split", [y], prefix, outputs=parts, axis=-1)


def ffn(g: GraphBuilder, prefix: str, x: str, w: Weights) -> str:
    """Pre-LN feed-forward sub-block with its residual."""
    h = _pre_norm(g, prefix, x, w)
    h = linear(g, f"{prefix}/linear_0", h, w[f"{prefix}/linear_0/weight"], w[f"{prefix}/linear_0/bias"])
    h = gelu(g, f"{prefix}/gelu", h)
    h = linear(g, f"{prefix}/linear_1", h, w[f"{prefix}/linear_1/weight"], w[f"{prefix}/linear_1/bias"])
    return residual(g, prefix, x, h)


def _pre_norm(g: GraphBuilder, prefix: str, x: str, w: Weights) -> str:
    return layer_norm(g, f"{prefix}/layer_norm", x, w[f"{prefix}/layer_norm/gamma"], w[f"{prefix}/layer_norm/beta"])


def _query_scale(heads: int, state: int) -> float:
    return float((state // heads) ** -0.5)


# --------------------------------------------------------------------- encoder


def conv_stem(g: GraphBuilder, prefix: str, mel: str, w: Weights) -> str:
    """[1, n_mels, F] -> GELU(conv1) -> GELU(conv2, stride 2) -> [1, F/2, C]."""
    h = mel
    for index, stride in ((1, 1), (2, 2)):
        name = f"{prefix}/conv{index}"
        inputs = [h, g.const(f"{name}/weight", w[f"{name}/weight"]), g.const(f"{name}/bias", w[f"{name}/bias"])]
        h = g.op("Conv", inputs, name, kernel_shape=[3], pads=[1, 1], strides=[stride])
        h = gelu(g, f"{name}/gelu", h)
    return g.op("Transpose", [h], prefix, perm=[0, 2, 1])


def add_positions(g: GraphBuilder, prefix: str, x: str, table: np.ndarray, start: str, length: str) -> str:
    """x + table[start : start + length] (start/length are 1-D int64 tensors of one element)."""
    end = g.op("Add", [start, length], prefix)
    axis = g.const(f"{prefix}/axis0", np.array([0], np.int64))
    rows = g.op("Slice", [g.const(f"{prefix}/encodings", table), start, end, axis], prefix)
    return g.op("Add", [x, rows], prefix)


def dim_of(g: GraphBuilder, prefix: str, x: str, axis: int) -> str:
    """Dimension `axis` of x as a 1-D int64 tensor of one element."""
    return g.op("Shape", [x], prefix, start=axis, end=axis + 1)


def encoder_block(g: GraphBuilder, prefix: str, x: str, w: Weights, heads: int, state: int) -> str:
    attn = f"{prefix}/self_attention"
    h = _pre_norm(g, attn, x, w)
    q, k, v = fused_projection(g, f"{attn}/linear_0", h, w, 3, _query_scale(heads, state))
    q, k, v = (split_heads(g, attn, t, heads) for t in (q, k, v))
    context = merge_heads(g, attn, attention(g, attn, q, k, v))
    out = linear(g, f"{attn}/linear_1", context, w[f"{attn}/linear_1/weight"], w[f"{attn}/linear_1/bias"])
    return ffn(g, f"{prefix}/ffn", residual(g, attn, x, out), w)


def cross_kv(g: GraphBuilder, prefix: str, x: str, w: Weights, dims: Dims) -> tuple[str, str]:
    """Every decoder layer's cross-attention K and V in one projection -> two [L, 1, H, T, D]."""
    layers, heads = dims.n_text_layer, dims.n_text_head
    names = [f"decoder/layer_{i}/attention/linear_1" for i in range(layers)]
    weight = np.concatenate([_f32(w[f"{n}/weight"]) for n in names])
    bias = np.concatenate([_f32(w[f"{n}/bias"]) for n in names])
    y = linear(g, prefix, x, weight, bias)  # [1, T, L*2*H*D], per layer K then V
    split_shape = g.const(f"{prefix}/split_shape", np.array([0, 0, layers, 2, heads, -1], np.int64))
    y = g.op("Reshape", [y, split_shape], prefix)  # [1, T, L, 2, H, D]
    y = g.op("Transpose", [y], prefix, perm=[3, 2, 0, 4, 1, 5])  # [2, L, 1, H, T, D]
    k, v = g.op("Split", [y], prefix, outputs=2, axis=0)
    axis0 = g.const(f"{prefix}/axis0", np.array([0], np.int64))
    return g.op("Squeeze", [k, axis0], prefix), g.op("Squeeze", [v, axis0], prefix)


def build_encoder(weights: Weights, dims: Dims, *, linear_as_conv: bool = False) -> onnx.ModelProto:
    """mel [1, n_mels, F] -> cross_k, cross_v [L, 1, H, F/2, D]."""
    g = GraphBuilder(linear_as_conv=linear_as_conv)
    x = conv_stem(g, "encoder", "mel", weights)
    zero = g.const("encoder/zero", np.array([0], np.int64))
    x = add_positions(g, "encoder/position_encodings", x, weights["encoder/position_encodings/encodings"], zero, dim_of(g, "encoder", x, 1))
    for i in range(dims.n_audio_layer):
        x = encoder_block(g, f"encoder/layer_{i}", x, weights, dims.n_audio_head, dims.n_audio_state)
    x = layer_norm(g, "encoder/layer_norm", x, weights["encoder/layer_norm/gamma"], weights["encoder/layer_norm/beta"])
    k, v = cross_kv(g, "encoder/cross_kv", x, weights, dims)
    g.nodes.append(helper.make_node("Identity", [k], ["cross_k"], name="cross_k"))
    g.nodes.append(helper.make_node("Identity", [v], ["cross_v"], name="cross_v"))
    kv_shape = [dims.n_text_layer, 1, dims.n_text_head, "T", dims.n_text_state // dims.n_text_head]
    inputs = [helper.make_tensor_value_info("mel", TensorProto.FLOAT, [1, dims.n_mels, "F"])]
    outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, kv_shape) for n in ("cross_k", "cross_v")]
    return g.model("whisper_encoder", inputs, outputs)


# --------------------------------------------------------------------- decoder


def causal_mask(g: GraphBuilder, prefix: str, past: str, new: str) -> str:
    """[N, P+N] additive mask: new token i sees cached positions and new tokens <= i."""
    zero, one = g.const(f"{prefix}/zero", np.array(0, np.int64)), g.const(f"{prefix}/one", np.array(1, np.int64))
    scalar_shape = g.const(f"{prefix}/scalar", np.array([], np.int64))
    past_s = g.op("Reshape", [past, scalar_shape], prefix)
    total_s = g.op("Add", [past_s, g.op("Reshape", [new, scalar_shape], prefix)], prefix)
    rows = g.op("Unsqueeze", [g.op("Range", [past_s, total_s, one], prefix), g.const(f"{prefix}/axis1", np.array([1], np.int64))], prefix)
    cols = g.op("Range", [zero, total_s, one], prefix)
    blocked = g.op("Greater", [cols, rows], prefix)
    neg, none = g.const(f"{prefix}/neg", np.array(MASK_VALUE, np.float32)), g.const(f"{prefix}/none", np.array(0.0, np.float32))
    return g.op("Where", [blocked, neg, none], prefix)


def layer_slice(g: GraphBuilder, prefix: str, stacked: str, index: int) -> str:
    """stacked[index] of a per-layer tensor [L, ...]."""
    return g.op("Gather", [stacked, g.const(f"{prefix}/index", np.array(index, np.int64))], prefix, axis=0)


def decoder_self_attention(
    g: GraphBuilder, prefix: str, x: str, w: Weights, heads: int, state: int, cache: tuple[str, str], mask: str
) -> tuple[str, str, str]:
    """Masked self-attention over cache + new tokens; returns (output, full K, full V) for the cache."""
    h = _pre_norm(g, prefix, x, w)
    q, k, v = fused_projection(g, f"{prefix}/linear_0", h, w, 3, _query_scale(heads, state))
    q, k, v = (split_heads(g, prefix, t, heads) for t in (q, k, v))
    k_all = g.op("Concat", [cache[0], k], prefix, axis=2)
    v_all = g.op("Concat", [cache[1], v], prefix, axis=2)
    context = merge_heads(g, prefix, attention(g, prefix, q, k_all, v_all, mask))
    out = linear(g, f"{prefix}/linear_1", context, w[f"{prefix}/linear_1/weight"], w[f"{prefix}/linear_1/bias"])
    return residual(g, prefix, x, out), k_all, v_all


def cross_attention(g: GraphBuilder, prefix: str, x: str, w: Weights, heads: int, state: int, kv: tuple[str, str]) -> str:
    """Attention to the encoder's K/V ([1, H, T, D], broadcast over the batch)."""
    h = _pre_norm(g, prefix, x, w)
    scale = _query_scale(heads, state)
    q = linear(g, f"{prefix}/linear_0", h, _f32(w[f"{prefix}/linear_0/weight"]) * scale, _f32(w[f"{prefix}/linear_0/bias"]) * scale)
    context = merge_heads(g, prefix, attention(g, prefix, split_heads(g, prefix, q, heads), kv[0], kv[1]))
    out = linear(g, f"{prefix}/linear_2", context, w[f"{prefix}/linear_2/weight"], w[f"{prefix}/linear_2/bias"])
    return residual(g, prefix, x, out)


def decoder_block(
    g: GraphBuilder, prefix: str, x: str, w: Weights, dims: Dims, cache: tuple[str, str], cross: tuple[str, str], mask: str
) -> tuple[str, str, str]:
    heads, state = dims.n_text_head, dims.n_text_state
    x, k_all, v_all = decoder_self_attention(g, f"{prefix}/self_attention", x, w, heads, state, cache, mask)
    x = cross_attention(g, f"{prefix}/attention", x, w, heads, state, cross)
    return ffn(g, f"{prefix}/ffn", x, w), k_all, v_all


def logits_last(g: GraphBuilder, prefix: str, x: str, embedding: np.ndarray) -> str:
    """Logits of the last position: x[:, -1] @ embedding^T, with its own (quantizable) initializer."""
    last = g.op("Gather", [x, g.const(f"{prefix}/last", np.array(-1, np.int64))], prefix, axis=1)
    return g.op("MatMul", [last, g.const(f"{prefix}/weight_t", _f32(embedding).T)], prefix)


def stack_layers(g: GraphBuilder, prefix: str, tensors: list[str], output: str) -> None:
    axis0 = g.const(f"{prefix}/axis0", np.array([0], np.int64))
    expanded = [g.op("Unsqueeze", [t, axis0], prefix) for t in tensors]
    g.nodes.append(helper.make_node("Concat", expanded, [output], name=output, axis=0))


def build_decoder(weights: Weights, dims: Dims, *, linear_as_conv: bool = False) -> onnx.ModelProto:
    """tokens, self_k/v cache, cross_k/v -> logits of the last position, extended cache."""
    g = GraphBuilder(linear_as_conv=linear_as_conv)
    embedding = weights["decoder/embeddings/weight"]
    x = g.op("Gather", [g.const("decoder/embeddings/weight", embedding), "tokens"], "decoder/embeddings", axis=0)
    past, new = dim_of(g, "decoder", "self_k", 3), dim_of(g, "decoder", "tokens", 1)
    x = add_positions(g, "decoder/position_encodings", x, weights["decoder/position_encodings/encodings"], past, new)
    mask = causal_mask(g, "decoder/mask", past, new)
    new_k, new_v = [], []
    for i in range(dims.n_text_layer):
        prefix = f"decoder/layer_{i}"
        cache = (layer_slice(g, prefix, "self_k", i), layer_slice(g, prefix, "self_v", i))
        cross = (cross_input("cross_k", i), cross_input("cross_v", i))
        x, k_all, v_all = decoder_block(g, prefix, x, weights, dims, cache, cross, mask)
        new_k.append(k_all)
        new_v.append(v_all)
    x = layer_norm(g, "decoder/layer_norm", x, weights["decoder/layer_norm/gamma"], weights["decoder/layer_norm/beta"])
    g.nodes.append(helper.make_node("Identity", [logits_last(g, "decoder/projection", x, weights["decoder/projection/weight"])], ["logits"], name="logits"))
    stack_layers(g, "decoder/new_self_k", new_k, "new_self_k")
    stack_layers(g, "decoder/new_self_v", new_v, "new_self_v")
    return g.model("whisper_decoder", _decoder_inputs(dims), _decoder_outputs(dims))


def _decoder_inputs(dims: Dims) -> list[onnx.ValueInfoProto]:
    layers, heads, head_dim = dims.n_text_layer, dims.n_text_head, dims.n_text_state // dims.n_text_head
    cache = [layers, "B", heads, "P", head_dim]
    cross = [1, heads, "T", head_dim]
    return [
        helper.make_tensor_value_info("tokens", TensorProto.INT64, ["B", "N"]),
        helper.make_tensor_value_info("self_k", TensorProto.FLOAT, cache),
        helper.make_tensor_value_info("self_v", TensorProto.FLOAT, cache),
    ] + [
        helper.make_tensor_value_info(name, TensorProto.FLOAT, cross) for name in cross_inputs(layers)
    ]


def _decoder_outputs(dims: Dims) -> list[onnx.ValueInfoProto]:
    layers, heads, head_dim = dims.n_text_layer, dims.n_text_head, dims.n_text_state // dims.n_text_head
    cache = [layers, "B", heads, "P_plus_N", head_dim]
    return [
        helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["B", dims.n_vocab]),
        helper.make_tensor_value_info("new_self_k", TensorProto.FLOAT, cache),
        helper.make_tensor_value_info("new_self_v", TensorProto.FLOAT, cache),
    ]
