"""MIL ops in NumPy, one function per op (semantics from coremltools' op definitions, iOS15-iOS18).

Every function receives float tensors as float32 (the program rounds each result to the op's
declared dtype afterwards), other tensors as stored, and the op's named inputs as keywords.
Functions return one array, or a tuple for ops with several outputs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from exporter.errors import BadInputError

OPS: dict = {}


def op(*names):
    def register(fn):
        for name in names:
            OPS[name] = fn
        return fn

    return register


def _scalar(value, default=None):
    if value is None:
        return default
    arr = np.asarray(value)
    return arr.item() if arr.size == 1 else arr


def _ints(value) -> list[int]:
    return [int(v) for v in np.asarray(value).reshape(-1)]


# ----------------------------------------------------------------- elementwise


def _binary(fn):
    def run(x, y, **_):
        return fn(np.asarray(x), np.asarray(y))

    return run


for _name, _fn in {
    "add": np.add,
    "sub": np.subtract,
    "mul": np.multiply,
    "real_div": np.divide,
    "maximum": np.maximum,
    "minimum": np.minimum,
    "pow": np.power,
    "floor_div": np.floor_divide,
    "mod": np.mod,
    "equal": np.equal,
    "not_equal": np.not_equal,
    "less": np.less,
    "less_equal": np.less_equal,
    "greater": np.greater,
    "greater_equal": np.greater_equal,
    "logical_and": np.logical_and,
    "logical_or": np.logical_or,
}.items():
    OPS[_name] = _binary(_fn)


def _sigmoid(x):
    # Split by sign so that exp never overflows.
    out = np.empty_like(x)
    pos = x >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-x[pos]))
    e = np.exp(x[~pos])
    out[~pos] = e / (1.0 + e)
    return out


def _erf(x):
    from scipy.special import erf

    return erf(x).astype(x.dtype, copy=False)


_UNARY: dict[str, Callable[..., Any]] = {
    "relu": lambda x: np.maximum(x, 0),
    "relu6": lambda x: np.clip(x, 0, 6),
    "sigmoid": _sigmoid,
    "tanh": np.tanh,
    "silu": lambda x: x * _sigmoid(x),
    "exp": np.exp,
    "exp2": np.exp2,
    "log": np.log,
    "sqrt": np.sqrt,
    "abs": np.abs,
    "square": np.square,
    "floor": np.floor,
    "ceil": np.ceil,
    "round": np.round,
    "sign": np.sign,
    "sin": np.sin,
    "cos": np.cos,
    "erf": _erf,
    "softsign": lambda x: x / (1 + np.abs(x)),
    "softplus": lambda x: np.logaddexp(0, x),
    "logical_not": np.logical_not,
    "identity": lambda x: x,
}
for _name, _unary in _UNARY.items():
    OPS[_name] = (lambda f: lambda x, **_: f(np.asarray(x)))(_unary)


@op("rsqrt")
def rsqrt(x, epsilon=1e-12, **_):
    return 1.0 / np.sqrt(x + _scalar(epsilon))


@op("inverse")
def inverse(x, epsilon=1e-4, **_):
    return 1.0 / (x + _scalar(epsilon))


@op("clip")
def clip(x, alpha, beta, **_):
    return np.minimum(np.maximum(x, _scalar(alpha)), _scalar(beta))


@op("sigmoid_hard")
def sigmoid_hard(x, alpha=0.2, beta=0.5, **_):
    return np.clip(_scalar(alpha) * x + _scalar(beta), 0, 1)


@op("thresholded_relu")
def thresholded_relu(x, alpha=1.0, **_):
    return np.where(x >= _scalar(alpha), x, 0).astype(x.dtype)


@op("leaky_relu")
def leaky_relu(x, alpha=0.01, **_):
    return np.where(x >= 0, x, _scalar(alpha) * x).astype(x.dtype)


@op("elu")
def elu(x, alpha=1.0, **_):
    return np.where(x > 0, x, _scalar(alpha) * (np.exp(np.minimum(x, 0)) - 1)).astype(x.dtype)


@op("prelu")
def prelu(x, alpha, **_):
    a = np.asarray(alpha).reshape(1, -1, *([1] * (x.ndim - 2)))
    return np.where(x >= 0, x, a * x).astype(x.dtype)


@op("linear_activation")
def linear_activation(x, alpha, beta=0.0, **_):
    return _scalar(alpha) * x + _scalar(beta)


@op("scaled_tanh")
def scaled_tanh(x, alpha=1.0, beta=1.0, **_):
    return _scalar(alpha) * np.tanh(_scalar(beta) * x)


@op("gelu")
def gelu(x, mode="EXACT", **_):
    mode = str(_scalar(mode))
    if mode == "EXACT":
        return 0.5 * x * (1.0 + _erf(x / np.float32(math.sqrt(2.0))))
    if mode == "TANH_APPROXIMATION":
        return 0.5 * x * (1.0 + np.tanh(np.float32(math.sqrt(2.0 / math.pi)) * (x + 0.044715 * x**3)))
    if mode == "SIGMOID_APPROXIMATION":
        return x * _sigmoid(1.702 * x)
    raise BadInputError(f"gelu mode {mode} is unknown")


@op("softmax")
def softmax(x, axis=-1, **_):
    axis = int(_scalar(axis, -1))
    shifted = x - x.max(axis=axis, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=axis, keepdims=True)


# ----------------------------------------------------------------- linear algebra


@op("linear")
def linear(x, weight, bias=None, **_):
    out = np.matmul(x, weight.T)
    return out + bias if bias is not None else out


@op("matmul")
def matmul(x, y, transpose_x=False, transpose_y=False, **_):
    if _scalar(transpose_x, False):
        x = np.swapaxes(x, -1, -2)
    if _scalar(transpose_y, False):
        y = np.swapaxes(y, -1, -2)
    return np.matmul(x, y)


def _same_pads(size: int, kernel: int, stride: int, dilation: int, lower: bool) -> tuple[int, int]:
    out = -(-size // stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    small, big = total // 2, total - total // 2
    return (big, small) if lower else (small, big)


def _spatial_pads(pad_type, pad, sizes, kernels, strides, dilations) -> list[tuple[int, int]]:
    pad_type = str(_scalar(pad_type, "valid"))
    if pad_type == "valid":
        return [(0, 0)] * len(sizes)
    if pad_type == "custom":
        p = _ints(pad) if pad is not None else [0] * (2 * len(sizes))
        return [(p[2 * i], p[2 * i + 1]) for i in range(len(sizes))]
    if pad_type in ("same", "same_lower"):
        return [_same_pads(s, k, st, d, pad_type == "same_lower") for s, k, st, d in zip(sizes, kernels, strides, dilations)]
    raise BadInputError(f"pad_type {pad_type} is unknown")


@op("conv")
def conv(x, weight, bias=None, strides=None, pad_type="valid", pad=None, dilations=None, groups=1, **_):
    if x.ndim == 3:  # conv1d as conv2d over a height of 1
        out = conv(
            x[:, :, None],
            weight[:, :, None],
            bias,
            [1, *_ints(strides or [1])],
            pad_type,
            None if pad is None else [0, 0, *_ints(pad)],
            [1, *_ints(dilations or [1])],
            groups,
        )
        return out[:, :, 0]
    if x.ndim != 4:
        raise BadInputError(f"conv on rank-{x.ndim} input is not supported by the interpreter")
    n, c, h, w = x.shape
    cout, cin_g, kh, kw = weight.shape
    strides = _ints(strides) if strides is not None else [1, 1]
    dil = _ints(dilations) if dilations is not None else [1, 1]
    groups = int(_scalar(groups, 1))
    (pt, pb), (pl, pr) = _spatial_pads(pad_type, pad, (h, w), (kh, kw), strides, dil)
    ho = (h + pt + pb - dil[0] * (kh - 1) - 1) // strides[0] + 1
    wo = (w + pl + pr - dil[1] * (kw - 1) - 1) // strides[1] + 1
    if pt or pb or pl or pr:
        x = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    sh, sw = strides

    def window(src, i, j):
        top, left = i * dil[0], j * dil[1]
        return src[:, :, top : top + sh * (ho - 1) + 1 : sh, left : left + sw * (wo - 1) + 1 : sw]

    if groups == c and cin_g == 1 and cout == c:  # depthwise
        out = np.zeros((n, c, ho, wo), dtype=np.float32)
        for i in range(kh):
            for j in range(kw):
                out += window(x, i, j) * weight[:, 0, i, j].reshape(1, c, 1, 1)
    elif kh == kw == 1 and groups == 1:
        src = x if (sh, sw) == (1, 1) else np.ascontiguousarray(window(x, 0, 0))
        out = np.matmul(weight.reshape(cout, cin_g), src.reshape(n, c, ho * wo)).reshape(n, cout, ho, wo)
    elif groups == 1:
        # im2col with the batch folded into the GEMM's columns: one (Cout x K) @ (K x N*L) product.
        cols = np.empty((c, kh * kw, n, ho, wo), dtype=np.float32)
        xt = x.transpose(1, 0, 2, 3)
        for i in range(kh):
            for j in range(kw):
                cols[:, i * kw + j] = window(xt, i, j)
        out = np.matmul(weight.reshape(cout, c * kh * kw), cols.reshape(c * kh * kw, n * ho * wo))
        out = out.reshape(cout, n, ho, wo).transpose(1, 0, 2, 3)
    else:
        cols = np.empty((n, c, kh * kw, ho, wo), dtype=np.float32)
        for i in range(kh):
            for j in range(kw):
                cols[:, :, i * kw + j] = window(x, i, j)
        cols = cols.reshape(n, groups, cin_g * kh * kw, ho * wo)
        wg = weight.reshape(groups, cout // groups, cin_g * kh * kw)
        out = np.matmul(wg[None], cols).reshape(n, cout, ho, wo)  # (n, g, cout/g, L)
    if bias is not None:
        out += bias.reshape(1, cout, 1, 1)
    return out


@op("conv_transpose")
def conv_transpose(
    x, weight, bias=None, pad=None, output_shape=None, pad_type="valid", strides=None, dilations=None, groups=1, **_
):
    """Transposed 2-D convolution (a U-Net's up-sampling): each input pixel scatters weight x value into the output.

    MIL's weight layout is (C_in, C_out / groups, kH, kW); pads crop the full output, as in PyTorch.
    """
    if x.ndim != 4:
        raise BadInputError(f"conv_transpose on rank-{x.ndim} input is not supported by the interpreter")
    groups = int(_scalar(groups, 1))
    if groups != 1:
        from exporter.errors import UnsupportedOp

        raise UnsupportedOp(f"unsupported op conv_transpose with groups={groups}")
    n, c, h, w = x.shape
    cin, cout, kh, kw = weight.shape
    sh, sw = _ints(strides) if strides is not None else [1, 1]
    dh, dw = _ints(dilations) if dilations is not None else [1, 1]
    full = np.zeros((n, cout, (h - 1) * sh + dh * (kh - 1) + 1, (w - 1) * sw + dw * (kw - 1) + 1), dtype=np.float32)
    for i in range(kh):
        for j in range(kw):
            contribution = np.einsum("nchw,cd->ndhw", x, weight[:, :, i, j], optimize=True)
            full[:, :, i * dh : i * dh + sh * (h - 1) + 1 : sh, j * dw : j * dw + sw * (w - 1) + 1 : sw] += contribution
    kind = str(_scalar(pad_type, "valid"))
    if kind not in ("valid", "custom"):
        raise BadInputError(f"conv_transpose pad_type {kind} is not supported by the interpreter")
    pt, pb, pl, pr = _ints(pad) if kind == "custom" and pad is not None else (0, 0, 0, 0)
    if output_shape is not None:  # output_padding: rows/columns past the cropped end, still inside the full output
        oh, ow = _ints(output_shape)[-2:]
    else:
        oh, ow = full.shape[2] - pt - pb, full.shape[3] - pl - pr
    full = np.pad(full, ((0, 0), (0, 0), (0, max(pt + oh - full.shape[2], 0)), (0, max(pl + ow - full.shape[3], 0))))
    full = full[:, :, pt : pt + oh, pl : pl + ow]
    if bias is not None:
        full += bias.reshape(1, cout, 1, 1)
    return full


def _pool(x, kernel_sizes, strides, pad_type, pad, ceil_mode, reducer, exclude_padding=True):
    if x.ndim != 4:
        raise BadInputError(f"pooling on rank-{x.ndim} input is not supported by the interpreter")
    n, c, h, w = x.shape
    kh, kw = _ints(kernel_sizes)
    sh, sw = _ints(strides) if strides is not None else (1, 1)
    (pt, pb), (pl, pr) = _spatial_pads(pad_type, pad, (h, w), (kh, kw), (sh, sw), (1, 1))
    ceil_mode = bool(_scalar(ceil_mode, False))

    def out_size(size, k, s, p0, p1):
        span = size + p0 + p1 - k
        out = (-(-span // s) if ceil_mode else span // s) + 1
        if ceil_mode and (out - 1) * s >= size + p0:
            out -= 1
        return out

    ho, wo = out_size(h, kh, sh, pt, pb), out_size(w, kw, sw, pl, pr)
    extra_h = max((ho - 1) * sh + kh - (h + pt + pb), 0)
    extra_w = max((wo - 1) * sw + kw - (w + pl + pr), 0)
    fill = -np.inf if reducer == "max" else 0.0
    xp = np.pad(x, ((0, 0), (0, 0), (pt, pb + extra_h), (pl, pr + extra_w)), constant_values=fill)
    acc = None
    for i in range(kh):
        for j in range(kw):
            win = xp[:, :, i : i + sh * (ho - 1) + 1 : sh, j : j + sw * (wo - 1) + 1 : sw]
            if acc is None:
                acc = win.astype(np.float32, copy=True)
            elif reducer == "max":
                np.maximum(acc, win, out=acc)
            else:
                acc += win
    if reducer == "max":
        return acc
    if exclude_padding:
        ones = np.pad(np.ones((1, 1, h, w), np.float32), ((0, 0), (0, 0), (pt, pb + extra_h), (pl, pr + extra_w)))
        count = sum(
            ones[:, :, i : i + sh * (ho - 1) + 1 : sh, j : j + sw * (wo - 1) + 1 : sw] for i in range(kh) for j in range(kw)
        )
    else:
        inside = np.pad(np.ones((1, 1, h + pt + pb, w + pl + pr), np.float32), ((0, 0), (0, 0), (0, extra_h), (0, extra_w)))
        count = sum(
            inside[:, :, i : i + sh * (ho - 1) + 1 : sh, j : j + sw * (wo - 1) + 1 : sw] for i in range(kh) for j in range(kw)
        )
    return acc / count


@op("max_pool")
def max_pool(x, kernel_sizes, strides=None, pad_type="valid", pad=None, ceil_mode=False, **_):
    return _pool(x, kernel_sizes, strides, pad_type, pad, ceil_mode, "max")


@op("avg_pool")
def avg_pool(x, kernel_sizes, strides=None, pad_type="valid", pad=None, ceil_mode=False, exclude_padding_from_average=False, **_):
    return _pool(x, kernel_sizes, strides, pad_type, pad, ceil_mode, "avg", bool(_scalar(exclude_padding_from_average, False)))


# ----------------------------------------------------------------- normalization and reductions


@op("batch_norm")
def batch_norm(x, mean, variance, gamma=None, beta=None, epsilon=1e-5, **_):
    shape = (1, -1) + (1,) * (x.ndim - 2)
    scale = 1.0 / np.sqrt(variance.astype(np.float32) + np.float32(_scalar(epsilon)))
    if gamma is not None:
        scale = scale * gamma
    shift = -mean * scale + (beta if beta is not None else 0.0)
    return x * scale.reshape(shape) + shift.reshape(shape)


@op("instance_norm")
def instance_norm(x, gamma=None, beta=None, epsilon=1e-5, **_):
    axes = tuple(range(2, x.ndim))
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    out = (x - mean) / np.sqrt(var + _scalar(epsilon))
    shape = (1, -1) + (1,) * (x.ndim - 2)
    if gamma is not None:
        out = out * gamma.reshape(shape)
    if beta is not None:
        out = out + beta.reshape(shape)
    return out


@op("layer_norm")
def layer_norm(x, axes=None, gamma=None, beta=None, epsilon=1e-5, **_):
    axes = tuple(a % x.ndim for a in _ints(axes)) if axes is not None else tuple(range(x.ndim))
    mean = x.mean(axis=axes, keepdims=True, dtype=np.float64)
    centered = x - mean.astype(np.float32)
    var = np.mean(np.square(centered), axis=axes, keepdims=True, dtype=np.float64).astype(np.float32)
    out = centered / np.sqrt(var + np.float32(_scalar(epsilon)))
    # gamma/beta have the shape of the normalized axes.
    shape = [x.shape[i] if i in axes else 1 for i in range(x.ndim)]
    if gamma is not None:
        out = out * gamma.reshape(shape)
    if beta is not None:
        out = out + beta.reshape(shape)
    return out


def _reduce(fn):
    def run(x, axes=None, keep_dims=False, **_):
        ax = tuple(a % x.ndim for a in _ints(axes)) if axes is not None else None
        return np.asarray(fn(x, axis=ax, keepdims=bool(_scalar(keep_dims, False))))

    return run


OPS["reduce_mean"] = _reduce(np.mean)
OPS["reduce_sum"] = _reduce(np.sum)
OPS["reduce_max"] = _reduce(np.max)
OPS["reduce_min"] = _reduce(np.min)
OPS["reduce_prod"] = _reduce(np.prod)


@op("reduce_l2_norm")
def reduce_l2_norm(x, axes=None, keep_dims=False, **_):
    return np.sqrt(_reduce(np.sum)(x * x, axes, keep_dims))


@op("reduce_argmax")
def reduce_argmax(x, axis=-1, keep_dims=False, **_):
    out = np.argmax(x, axis=int(_scalar(axis, -1)))
    return (np.expand_dims(out, int(_scalar(axis, -1))) if _scalar(keep_dims, False) else out).astype(np.int32)


# ----------------------------------------------------------------- shapes and data movement


@op("reshape")
def reshape(x, shape, **_):
    dims = _ints(shape)
    dims = [x.shape[i] if d == 0 else d for i, d in enumerate(dims)]
    return x.reshape(dims)


@op("transpose")
def transpose(x, perm, **_):
    return np.transpose(x, _ints(perm))


@op("concat")
def concat(values, axis, interleave=False, **_):
    values = values if isinstance(values, list) else [values]
    # coremltools concatenates scalars into a shape vector (ViT's class-token expand): as 1-D
    values = [np.atleast_1d(v) if np.ndim(v) == 0 else v for v in values]
    axis = int(_scalar(axis))
    if _scalar(interleave, False):
        stacked = np.stack(values, axis=axis + 1 if axis >= 0 else axis)
        shape = list(values[0].shape)
        shape[axis] = -1
        return stacked.reshape(shape)
    return np.concatenate(values, axis=axis)


def _source_coords(out_size: int, in_size: int, scale: float, align_corners: bool, half_pixel: bool) -> np.ndarray:
    o = np.arange(out_size, dtype=np.float64)
    if align_corners:
        coords = o * ((in_size - 1) / (out_size - 1) if out_size > 1 else 0.0)
    elif half_pixel:
        coords = (o + 0.5) / scale - 0.5
    else:
        coords = o / scale
    return np.clip(coords, 0, in_size - 1)


def _lerp_axis(x: np.ndarray, coords: np.ndarray, axis: int) -> np.ndarray:
    low = np.floor(coords).astype(np.int64)
    high = np.minimum(low + 1, x.shape[axis] - 1)
    frac = (coords - low).astype(x.dtype)
    shape = [1] * x.ndim
    shape[axis] = -1
    frac = frac.reshape(shape)
    return np.take(x, low, axis=axis) * (1 - frac) + np.take(x, high, axis=axis) * frac


@op("upsample_bilinear")
def upsample_bilinear(x, scale_factor_height=1.0, scale_factor_width=1.0, align_corners=True, half_pixel_centers=None, **_):
    """MIL upsample_bilinear (EfficientFormer-V2's nn.Upsample); half_pixel_centers defaults to !align_corners."""
    align = bool(_scalar(align_corners, True))
    half = (not align) if half_pixel_centers is None else bool(_scalar(half_pixel_centers))
    sh, sw = float(_scalar(scale_factor_height)), float(_scalar(scale_factor_width))
    h, w = x.shape[-2:]
    out_h, out_w = int(np.floor(h * sh)), int(np.floor(w * sw))
    y = _lerp_axis(x, _source_coords(out_h, h, sh, align, half), x.ndim - 2)
    return _lerp_axis(y, _source_coords(out_w, w, sw, align, half), x.ndim - 1)


@op("fill")
def fill(shape, value=0.0, **_):
    """MIL fill: a tensor of ``shape`` holding ``value`` (EdgeNeXt's positional-encoding mask)."""
    value = np.asarray(value)
    return np.full(tuple(_ints(shape)), value, dtype=value.dtype)


@op("cumsum")
def cumsum(x, axis=0, exclusive=False, reverse=False, **_):
    """MIL cumsum (EdgeNeXt's positional encoding)."""
    axis = int(_scalar(axis))
    x = np.flip(x, axis) if _scalar(reverse, False) else x
    out = np.cumsum(x, axis=axis, dtype=x.dtype)
    if _scalar(exclusive, False):
        out = out - x
    return np.flip(out, axis) if _scalar(reverse, False) else out


@op("stack")
def stack(values, axis, **_):
    """MIL stack (SKNet's split-attention branches): new axis, like np.stack."""
    values = values if isinstance(values, list) else [values]
    return np.stack(values, axis=int(_scalar(axis)))


@op("squeeze")
def squeeze(x, axes=None, **_):
    return np.squeeze(x, axis=tuple(_ints(axes)) if axes is not None else None)


@op("expand_dims")
def expand_dims(x, axes, **_):
    out = x
    for a in sorted(a if a >= 0 else a + x.ndim + len(_ints(axes)) for a in _ints(axes)):
        out = np.expand_dims(out, a)
    return out


@op("flatten2d")
def flatten2d(x, axis=1, **_):
    axis = int(_scalar(axis, 1))
    return x.reshape(int(np.prod(x.shape[:axis])), -1)


@op("shape")
def shape(x, **_):
    return np.asarray(x.shape, dtype=np.int32)


@op("gather")
def gather(x, indices, axis=0, batch_dims=0, validate_indices=False, **_):
    if int(_scalar(batch_dims, 0)) != 0:
        raise BadInputError("gather with batch_dims is not supported by the interpreter")
    return np.take(x, np.asarray(indices).astype(np.int64), axis=int(_scalar(axis, 0)))


@op("gather_along_axis")
def gather_along_axis(x, indices, axis=0, **_):
    axis = int(_scalar(axis, 0)) % x.ndim
    return np.take_along_axis(x, _wrapped(indices, x.shape[axis]), axis=axis)


@op("gather_nd")
def gather_nd(x, indices, batch_dims=0, **_):
    if int(_scalar(batch_dims, 0)) != 0:
        raise BadInputError("gather_nd with batch_dims is not supported by the interpreter")
    idx = np.asarray(indices).astype(np.int64)
    k = idx.shape[-1]
    idx = np.where(idx < 0, idx + np.asarray(x.shape[:k]), idx)
    return x[tuple(np.moveaxis(idx, -1, 0))]


@op("select")
def select(cond, a, b, **_):
    return np.where(np.asarray(cond).astype(bool), a, b)


_SCATTER_MODES = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide, "max": np.maximum, "min": np.minimum}


def _scatter_into(target: np.ndarray, index, updates: np.ndarray, mode) -> None:
    """``target[index] (mode)= updates`` in place; repeated indices accumulate (``ufunc.at``)."""
    mode = str(_scalar(mode))
    if mode == "update":
        target[index] = updates
    elif mode in _SCATTER_MODES:
        _SCATTER_MODES[mode].at(target, index, updates)
    else:
        raise BadInputError(f"scatter mode {mode} is unknown")


def _wrapped(indices, size: int) -> np.ndarray:
    idx = np.asarray(indices).astype(np.int64)
    return np.where(idx < 0, idx + size, idx)


@op("scatter")
def scatter(data, indices, updates, axis=0, mode="add", **_):  # MIL's default mode is add
    # output[..., indices[i], ...] = updates[..., i, ...] along `axis`
    out = np.array(data, copy=True)
    axis = int(_scalar(axis, 0)) % out.ndim
    idx = _wrapped(indices, out.shape[axis]).reshape(-1)
    _scatter_into(np.moveaxis(out, axis, 0), idx, np.moveaxis(np.asarray(updates, dtype=out.dtype), axis, 0), mode)
    return out


@op("scatter_along_axis")
def scatter_along_axis(data, indices, updates, axis=0, mode="add", **_):
    # output[p with p[axis] = indices[p]] = updates[p]; indices has the shape of updates
    out = np.array(data, copy=True)
    axis = int(_scalar(axis, 0)) % out.ndim
    idx = _wrapped(indices, out.shape[axis])
    grid = list(np.indices(idx.shape, sparse=True))
    grid[axis] = idx
    _scatter_into(out, tuple(grid), np.asarray(updates, dtype=out.dtype), mode)
    return out


@op("scatter_nd")
def scatter_nd(data, indices, updates, mode="add", **_):
    # indices [..., K] address the first K dims of data; updates [..., data.shape[K:]]
    out = np.array(data, copy=True)
    idx = np.asarray(indices).astype(np.int64)
    k = idx.shape[-1]
    idx = np.where(idx < 0, idx + np.asarray(out.shape[:k]), idx).reshape(-1, k)
    updates = np.asarray(updates, dtype=out.dtype).reshape(len(idx), *out.shape[k:])
    _scatter_into(out, tuple(idx.T), updates, mode)
    return out


@op("slice_by_index")
def slice_by_index(x, begin, end, stride=None, begin_mask=None, end_mask=None, squeeze_mask=None, **_):
    begin, end = _ints(begin), _ints(end)
    stride = _ints(stride) if stride is not None else [1] * x.ndim
    bm = [bool(v) for v in np.asarray(begin_mask).reshape(-1)] if begin_mask is not None else [False] * x.ndim
    em = [bool(v) for v in np.asarray(end_mask).reshape(-1)] if end_mask is not None else [False] * x.ndim
    sm = [bool(v) for v in np.asarray(squeeze_mask).reshape(-1)] if squeeze_mask is not None else [False] * x.ndim
    index = []
    for d in range(x.ndim):
        if sm[d]:
            index.append(begin[d])
            continue
        index.append(slice(None if bm[d] else begin[d], None if em[d] else end[d], stride[d]))
    return x[tuple(index)]


@op("slice_by_size")
def slice_by_size(x, begin, size, **_):
    begin, size = _ints(begin), _ints(size)
    return x[tuple(slice(b, None if s == -1 else b + s) for b, s in zip(begin, size))]


@op("split")
def split(x, axis, num_splits=None, split_sizes=None, **_):
    axis = int(_scalar(axis))
    if split_sizes is not None:
        return tuple(np.split(x, np.cumsum(_ints(split_sizes))[:-1], axis=axis))
    return tuple(np.split(x, int(_scalar(num_splits)), axis=axis))


@op("topk")
def topk(x, k=1, axis=-1, ascending=False, sort=True, return_indices=True, **_):
    """Values and indices of the k largest (smallest with ``ascending``) along ``axis``; ties keep the
    lower index first, as a stable sort does (Core ML documents no order among equal values)."""
    axis, k = int(_scalar(axis)), int(_scalar(k))
    x = np.asarray(x)
    order = np.argsort(x if _scalar(ascending) else -x, axis=axis, kind="stable")
    index = np.take(order, np.arange(min(k, x.shape[axis])), axis=axis)
    return np.take_along_axis(x, index, axis=axis), index.astype(np.int32)


@op("tile")
def tile(x, reps, **_):
    return np.tile(x, _ints(reps))


@op("pad")
def pad(x, pad, mode="constant", constant_val=0.0, **_):
    p = _ints(pad)
    lead = x.ndim - len(p) // 2
    widths = [(0, 0)] * lead + [(p[2 * i], p[2 * i + 1]) for i in range(len(p) // 2)]
    mode = str(_scalar(mode, "constant"))
    if mode == "constant":
        return np.pad(x, widths, constant_values=_scalar(constant_val, 0.0))
    return np.pad(x, widths, mode={"reflect": "reflect", "replicate": "edge"}[mode])


@op("upsample_nearest_neighbor")
def upsample_nearest_neighbor(x, scale_factor_height=1, scale_factor_width=1, **_):
    sh, sw = _scalar(scale_factor_height, 1), _scalar(scale_factor_width, 1)
    if float(sh).is_integer() and float(sw).is_integer():
        return x.repeat(int(sh), axis=2).repeat(int(sw), axis=3)
    rows = np.floor(np.arange(int(x.shape[2] * sh)) / sh).astype(int)
    cols = np.floor(np.arange(int(x.shape[3] * sw)) / sw).astype(int)
    return x[:, :, rows][:, :, :, cols]


_CAST = {
    "fp16": np.float16,
    "fp32": np.float32,
    "fp64": np.float64,
    "int32": np.int32,
    "int64": np.int64,
    "int16": np.int16,
    "int8": np.int8,
    "uint8": np.uint8,
    "uint16": np.uint16,
    "bool": bool,
}


@op("cast")
def cast(x, dtype, **_):
    name = str(_scalar(dtype))
    if name not in _CAST:
        raise BadInputError(f"cast to {name} is not supported by the interpreter")
    return np.asarray(x).astype(_CAST[name])


@op("classify")
def classify(probabilities, classes, **_):
    labels = np.asarray([_scalar(c) for c in classes], dtype=object)
    probs = np.asarray(probabilities, dtype=np.float32)
    squeeze = probs.ndim == 1
    probs2 = probs.reshape(1, -1) if squeeze else probs.reshape(probs.shape[0], -1)
    return labels[np.argmax(probs2, axis=1)], probs2


# ----------------------------------------------------------------- compile-time (constexpr) ops


@op("constexpr_affine_dequantize")
def constexpr_affine_dequantize(quantized_data, zero_point, scale, axis, **_):
    q = quantized_data.astype(np.float32)
    shape = [1] * q.ndim
    zp, sc = np.asarray(zero_point, np.float32), np.asarray(scale, np.float32)
    if sc.size > 1 or zp.size > 1:
        shape[int(_scalar(axis))] = -1
        zp = zp.reshape(shape) if zp.size > 1 else zp
        sc = sc.reshape(shape) if sc.size > 1 else sc
    return (q - zp) * sc


@op("constexpr_blockwise_shift_scale")
def constexpr_blockwise_shift_scale(data, scale, offset=None, **_):
    out = data.astype(np.float32)
    scale = np.asarray(scale, np.float32)
    blocks = [d // s for d, s in zip(out.shape, scale.shape)]
    for axis, block in enumerate(blocks):
        if block > 1:
            scale = np.repeat(scale, block, axis)
            if offset is not None:
                offset = np.repeat(np.asarray(offset, np.float32), block, axis)
    if offset is not None:
        out = out - offset
    return out * scale


@op("constexpr_lut_to_dense")
def constexpr_lut_to_dense(indices, lut, shape=None, vector_axis=None, **_):
    from exporter.targets.coreml.mil.package import unpack_sub_byte

    if shape is not None:  # iOS16: a flat LUT and packed uint8 indices
        dims = _ints(shape)
        count = int(np.prod(dims))
        nbits = int(round(math.log2(lut.size)))
        idx = unpack_sub_byte(np.asarray(indices, np.uint8).tobytes(), nbits, count, signed=False)
        return lut.reshape(-1)[idx.astype(np.int64)].reshape(dims)
    # iOS18: per-block LUTs of shape [*blocks, NUM_PALETTES, VECTOR_SIZE] over unpacked indices
    if lut.shape[-1] != 1:
        raise BadInputError("vector palettization (VECTOR_SIZE > 1) is not supported by the interpreter")
    table = lut[..., 0]
    for axis in range(indices.ndim):
        block = indices.shape[axis] // table.shape[axis]
        if block > 1:
            table = np.repeat(table, block, axis)
    return np.take_along_axis(table, indices.astype(np.int64)[..., None], axis=-1)[..., 0]


@op("constexpr_cast")
def constexpr_cast(source_val, output_dtype, **_):
    return cast(source_val, output_dtype)
