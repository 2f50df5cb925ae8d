"""The MIL interpreter's pieces against independent references (PyTorch ops, coremltools' own decoders)."""

import os
from pathlib import Path

import numpy as np
import pytest

from exporter.errors import BadInputError, OutputError
from exporter.targets.coreml.mil import ops
from exporter.targets.coreml.mil.package import BLOB_SENTINEL, WeightFile, unpack_sub_byte

torch = pytest.importorskip("torch")
F = torch.nn.functional


def _t(a):
    return torch.from_numpy(np.ascontiguousarray(a))


@pytest.mark.parametrize(
    "cin,cout,k,stride,pad,dil,groups",
    [
        (3, 8, 3, 1, 1, 1, 1),
        (4, 6, 3, 2, 1, 1, 2),
        (8, 8, 3, 2, 1, 1, 8),
        (5, 7, 1, 2, 0, 1, 1),
        (4, 4, 3, 1, 2, 2, 1),
        (3, 5, 7, 2, 3, 1, 1),
    ],
)
def test_conv_matches_torch(cin, cout, k, stride, pad, dil, groups):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, cin, 11, 13)).astype(np.float32)
    w = rng.standard_normal((cout, cin // groups, k, k)).astype(np.float32)
    b = rng.standard_normal(cout).astype(np.float32)
    ours = ops.conv(x, w, b, strides=[stride, stride], pad_type="custom", pad=[pad] * 4, dilations=[dil, dil], groups=groups)
    ref = F.conv2d(_t(x), _t(w), _t(b), stride=stride, padding=pad, dilation=dil, groups=groups).numpy()
    assert ours.shape == ref.shape
    assert np.abs(ours - ref).max() < 1e-4


@pytest.mark.parametrize("k,stride,pad,dil,out_pad", [(2, 2, 0, 1, 0), (3, 2, 1, 1, 1), (4, 2, 1, 1, 0), (3, 1, 1, 2, 0)])
def test_conv_transpose_matches_torch(k, stride, pad, dil, out_pad):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 4, 7, 9)).astype(np.float32)
    w = rng.standard_normal((4, 6, k, k)).astype(np.float32)
    b = rng.standard_normal(6).astype(np.float32)
    expected = F.conv_transpose2d(_t(x), _t(w), _t(b), stride=stride, padding=pad, output_padding=out_pad, dilation=dil).numpy()
    got = ops.conv_transpose(
        x,
        w,
        b,
        pad=[pad] * 4,
        pad_type="custom",
        strides=[stride] * 2,
        dilations=[dil] * 2,
        output_shape=list(expected.shape) if out_pad else None,
    )
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)


def test_conv_same_padding_matches_tensorflow_rule():
    x = np.arange(2 * 1 * 5 * 5, dtype=np.float32).reshape(2, 1, 5, 5)
    w = np.ones((1, 1, 2, 2), np.float32)
    out = ops.conv(x, w, None, strides=[2, 2], pad_type="same")
    assert out.shape == (2, 1, 3, 3)  # ceil(5 / 2)
    assert out[0, 0, 2, 2] == x[0, 0, 4, 4]  # the extra padding goes at the end ("same", not "same_lower")


@pytest.mark.parametrize("ceil_mode", [False, True])
@pytest.mark.parametrize("kind", ["max", "avg"])
def test_pools_match_torch(kind, ceil_mode):
    x = np.random.default_rng(1).standard_normal((2, 3, 10, 9)).astype(np.float32)
    args = dict(kernel_sizes=[3, 3], strides=[2, 2], pad_type="custom", pad=[1, 1, 1, 1], ceil_mode=ceil_mode)
    if kind == "max":
        ours = ops.max_pool(x, **args)
        ref = F.max_pool2d(_t(x), 3, 2, 1, ceil_mode=ceil_mode).numpy()
    else:
        ours = ops.avg_pool(x, exclude_padding_from_average=False, **args)
        ref = F.avg_pool2d(_t(x), 3, 2, 1, ceil_mode=ceil_mode, count_include_pad=True).numpy()
        excl = ops.avg_pool(x, exclude_padding_from_average=True, **args)
        ref_excl = F.avg_pool2d(_t(x), 3, 2, 1, ceil_mode=ceil_mode, count_include_pad=False).numpy()
        assert np.abs(excl - ref_excl).max() < 1e-5
    assert ours.shape == ref.shape
    assert np.abs(ours - ref).max() < 1e-5


def test_activations_and_norms_match_torch():
    x = np.random.default_rng(2).standard_normal((2, 4, 5, 6)).astype(np.float32) * 4
    tx = _t(x)
    assert np.abs(ops.OPS["silu"](x) - F.silu(tx).numpy()).max() < 1e-6
    assert np.abs(ops.gelu(x, "EXACT") - F.gelu(tx).numpy()).max() < 1e-5
    assert np.abs(ops.gelu(x, "TANH_APPROXIMATION") - F.gelu(tx, approximate="tanh").numpy()).max() < 1e-5
    assert np.abs(ops.sigmoid_hard(x, 1 / 6, 0.5) - F.hardsigmoid(tx).numpy()).max() < 1e-6
    assert np.abs(ops.softmax(x, 1) - F.softmax(tx, 1).numpy()).max() < 1e-6
    gamma, beta = np.random.default_rng(3).standard_normal((2, 6, 4)).astype(np.float32)
    ln = ops.layer_norm(x.transpose(0, 2, 3, 1), axes=[-1], gamma=gamma[0], beta=beta[0], epsilon=1e-6)
    ref = F.layer_norm(tx.permute(0, 2, 3, 1), (4,), _t(gamma[0]), _t(beta[0]), 1e-6).numpy()
    assert np.abs(ln - ref).max() < 1e-5
    mean, var = x.mean(axis=(0, 2, 3)), x.var(axis=(0, 2, 3)) + 0.5
    bn = ops.batch_norm(x, mean, var, gamma[0], beta[0], 1e-5)
    assert np.abs(bn - F.batch_norm(tx, _t(mean), _t(var), _t(gamma[0]), _t(beta[0]), eps=1e-5).numpy()).max() < 1e-5
    assert np.array_equal(ops.thresholded_relu(np.array([-1.0, 0.5, 1.0, 2.0], np.float32), 1.0), [0, 0, 1.0, 2.0])


def test_scatter_gather_and_select_match_torch():
    """Swin's shifted-window mask lowers to scatter/select; their semantics against torch's own."""
    rng = np.random.default_rng(4)
    data = rng.standard_normal((3, 5, 4)).astype(np.float32)
    idx = np.array([4, 0, -1, 0], np.int32)  # a negative index and a repeated one
    upd = rng.standard_normal((3, 4, 4)).astype(np.float32)
    wrapped = torch.from_numpy(np.where(idx < 0, idx + 5, idx).astype(np.int64))
    # mode add on axis 1 == index_add (repeats accumulate); the default mode is add
    assert np.allclose(ops.scatter(data, idx, upd, axis=1), _t(data).index_add(1, wrapped, _t(upd)).numpy(), atol=1e-6)
    assert np.allclose(
        ops.scatter(data, idx, upd, axis=1, mode="mul"), _t(data).index_reduce(1, wrapped, _t(upd), "prod").numpy(), atol=1e-6
    )
    unique = np.array([3, 0], np.int32)
    out = ops.scatter(data, unique, upd[:, :2], axis=-2, mode="update")
    assert np.array_equal(out, _t(data).index_copy(1, torch.tensor([3, 0]), _t(upd[:, :2])).numpy())
    along = rng.integers(0, 5, (3, 2, 4))
    val = rng.standard_normal((3, 2, 4)).astype(np.float32)
    assert np.allclose(
        ops.scatter_along_axis(data, along, val, axis=1),
        _t(data).scatter_add(1, torch.from_numpy(along), _t(val)).numpy(),
        atol=1e-6,
    )
    assert np.array_equal(ops.gather_along_axis(data, along, axis=1), torch.gather(_t(data), 1, torch.from_numpy(along)).numpy())
    nd = np.array([[0, 1], [2, 4], [0, 1]], np.int32)
    rows = rng.standard_normal((3, 4)).astype(np.float32)
    ref = data.copy()
    for (i, j), row in zip(nd, rows):
        ref[i, j] += row
    assert np.allclose(ops.scatter_nd(data, nd, rows), ref, atol=1e-6)
    assert np.array_equal(ops.gather_nd(data, nd), data[[0, 2, 0], [1, 4, 1]])
    cond = data > 0
    # coremltools concatenates scalars into a shape vector (ViT's class-token expand)
    assert np.array_equal(ops.concat([np.int32(2), np.array(-1, np.int32), np.array([16], np.int32)], axis=0), [2, -1, 16])
    assert np.array_equal(ops.select(cond, data, np.float32(-100)), torch.where(_t(cond), _t(data), -100.0).numpy())
    with pytest.raises(BadInputError, match="scatter mode"):
        ops.scatter(data, unique, upd[:, :2], axis=1, mode="xor")


@pytest.mark.parametrize("nbits,signed", [(1, False), (2, False), (3, False), (4, False), (6, False), (4, True)])
def test_sub_byte_unpacking_agrees_with_coremltools(nbits, signed):
    from exporter.targets.coreml.mil.package import quiet_import_coremltools

    quiet_import_coremltools()
    from coremltools.optimize import _utils as cto_utils

    rng = np.random.default_rng(nbits)
    low, high = (-(1 << (nbits - 1)), 1 << (nbits - 1)) if signed else (0, 1 << nbits)
    values = rng.integers(low, high, size=37)
    packed = cto_utils.pack_elements_into_bits(values.astype(np.int8 if signed else np.uint8), nbits)
    assert np.array_equal(unpack_sub_byte(packed.tobytes(), nbits, 37, signed), values)


def _blob_file(tmp_path: Path, payload: np.ndarray, sentinel=BLOB_SENTINEL) -> Path:
    header = np.zeros(16, np.uint32)
    header[0], header[1] = 1, 2
    meta = bytearray(64)
    meta[0:4] = np.uint32(sentinel).tobytes()
    meta[4:8] = np.uint32(2).tobytes()  # float32
    meta[8:16] = np.uint64(payload.nbytes).tobytes()
    meta[16:24] = np.uint64(128).tobytes()
    path = tmp_path / "weight.bin"
    path.write_bytes(header.tobytes() + bytes(meta) + payload.astype(np.float32).tobytes())
    return path


def test_weight_file_reads_blobs_and_rejects_a_bad_sentinel(tmp_path):
    payload = np.arange(6, dtype=np.float32)
    good = WeightFile(_blob_file(tmp_path, payload))
    assert np.array_equal(np.frombuffer(good.read(64, "float32"), np.float32), payload)
    with pytest.raises(BadInputError, match="dtype code"):
        good.read(64, "float16")
    bad = WeightFile(_blob_file(tmp_path, payload, sentinel=0x12345678))
    with pytest.raises(BadInputError, match="sentinel"):
        bad.read(64, "float32")


def test_constexpr_decompression_matches_coremltools_semantics():
    lut = np.array([-1.0, 0.0, 0.5, 2.0], np.float32)
    idx = np.array([3, 0, 1, 2, 2, 1], np.uint8)
    from exporter.targets.coreml.mil.package import quiet_import_coremltools

    quiet_import_coremltools()
    from coremltools.optimize import _utils as cto_utils

    packed = cto_utils.pack_elements_into_bits(idx, 2)
    dense = ops.constexpr_lut_to_dense(packed, lut, shape=np.array([2, 3], np.uint32))
    assert np.array_equal(dense, lut[idx].reshape(2, 3))
    q = np.array([[-128, 0, 127], [1, 2, 3]], np.int8)
    out = ops.constexpr_affine_dequantize(q, np.int8(0), np.array([0.5, 0.25], np.float32), axis=0)
    assert np.allclose(out, q * np.array([[0.5], [0.25]]))
    out18 = ops.constexpr_blockwise_shift_scale(q, np.array([[0.5], [0.25]], np.float32))
    assert np.allclose(out18, out)


def test_staging_replaces_a_package_atomically_and_keeps_the_old_one_on_failure(tmp_path, monkeypatch):
    from exporter import fsutil
    from exporter.fsutil import Staging

    final = tmp_path / "m.mlpackage"
    final.mkdir()
    (final / "old.txt").write_text("old")
    with Staging(tmp_path) as staging:
        (staging.path / "m.mlpackage").mkdir()
        (staging.path / "m.mlpackage" / "new.txt").write_text("new")
        staging.commit(["m.mlpackage"])
    assert sorted(p.name for p in final.iterdir()) == ["new.txt"]

    # The two-step fallback (no atomic exchange) puts the old package back when the move fails.
    monkeypatch.setattr(fsutil, "_exchange", lambda a, b: False)
    real_replace = os.replace
    calls = []

    def failing_replace(src, dst):
        calls.append((Path(src).name, Path(dst).name))
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(fsutil.os, "replace", failing_replace)
    with pytest.raises(OSError), Staging(tmp_path) as staging:
        (staging.path / "m.mlpackage").mkdir()
        (staging.path / "m.mlpackage" / "newer.txt").write_text("newer")
        staging.commit(["m.mlpackage"])
    assert sorted(p.name for p in final.iterdir()) == ["new.txt"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".cnnexport-tmp-")]


def test_staging_refuses_a_package_over_a_file(tmp_path):
    from exporter.fsutil import Staging

    (tmp_path / "m.mlpackage").write_text("a file")
    with Staging(tmp_path) as staging:
        (staging.path / "m.mlpackage").mkdir()
        with pytest.raises(OutputError):
            staging.commit(["m.mlpackage"])
    assert (tmp_path / "m.mlpackage").read_text() == "a file"


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_stack_matches_torch(axis):
    rng = np.random.default_rng(0)
    parts = [rng.standard_normal((2, 3, 4)).astype(np.float32) for _ in range(3)]
    ref = torch.stack([_t(p) for p in parts], dim=axis).numpy()
    ours = ops.stack(parts, axis=np.int32(axis))
    assert ours.shape == ref.shape and np.array_equal(ours, ref)


def test_fp16_op_selector_keeps_subnormal_factors_in_fp32():
    from types import SimpleNamespace

    from exporter.targets.coreml.stage import fp16_safe_op

    def op(kind, *values):
        return SimpleNamespace(op_type=kind, inputs={f"x{i}": SimpleNamespace(val=v) for i, v in enumerate(values)})

    gamma = np.full((1, 8, 1, 1), 1e-5, np.float32)  # timm's LayerScale init
    assert not fp16_safe_op(op("mul", None, gamma))
    assert not fp16_safe_op(op("mul", None, np.float32(2e-6)))
    assert fp16_safe_op(op("mul", None, np.full(8, 0.1, np.float32)))
    assert fp16_safe_op(op("add", None, gamma))  # an add of a tiny value loses nothing fp16 could keep
    assert fp16_safe_op(op("conv", None, np.zeros((4, 3, 3, 3), np.float32)))  # all-zero weights are exact


@pytest.mark.parametrize("exclusive", [False, True])
@pytest.mark.parametrize("reverse", [False, True])
def test_cumsum_matches_numpy_semantics_of_mil(exclusive, reverse):
    x = np.arange(1, 13, dtype=np.float32).reshape(3, 4)
    ref = torch.cumsum(_t(np.flip(x, 1).copy() if reverse else x), dim=1).numpy()
    if exclusive:
        ref = ref - (np.flip(x, 1) if reverse else x)
    if reverse:
        ref = np.flip(ref, 1)
    assert np.array_equal(ops.cumsum(x, axis=np.int32(1), exclusive=exclusive, reverse=reverse), ref)


def test_fill_keeps_the_value_dtype():
    assert ops.fill(np.array([2, 3], np.int32), np.float32(1.5)).tolist() == [[1.5] * 3] * 2
    filled = ops.fill(np.array([4], np.int32), np.int32(7))
    assert filled.dtype == np.int32 and filled.tolist() == [7] * 4


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("scale", [2.0, 3.0])
def test_upsample_bilinear_matches_torch(align_corners, scale):
    x = np.random.default_rng(0).standard_normal((2, 3, 5, 7)).astype(np.float32)
    ref = F.interpolate(_t(x), scale_factor=scale, mode="bilinear", align_corners=align_corners).numpy()
    ours = ops.upsample_bilinear(
        x, scale_factor_height=np.float32(scale), scale_factor_width=np.float32(scale), align_corners=np.bool_(align_corners)
    )
    assert ours.shape == ref.shape and np.abs(ours - ref).max() < 1e-5


@pytest.mark.parametrize("ascending", [False, True])
def test_topk_matches_torch(ascending):
    x = np.random.default_rng(1).standard_normal((2, 50)).astype(np.float32)
    values, index = ops.topk(x, k=np.int32(7), axis=np.int32(1), ascending=ascending)
    ref_values, ref_index = torch.topk(_t(x), 7, dim=1, largest=not ascending)
    assert np.array_equal(values, ref_values.numpy()) and np.array_equal(index, ref_index.numpy())
    assert index.dtype == np.int32  # an index Core ML can gather with


def test_integer_floor_divide_stays_an_integer_after_conversion(tmp_path):
    ct = pytest.importorskip("coremltools", reason="coremltools is not installed (scripts/setup.sh installs it)")
    from exporter.targets.coreml.patches import fix_integer_floor_divide

    class TopRows(torch.nn.Module):  # the shape of an NMS-free YOLO head's top-k: flat index -> row, column
        def forward(self, x):
            index = x.flatten(1).topk(4, dim=1)[1]
            rows = index // x.shape[2]
            return x.max(dim=2)[0].gather(1, rows) + (index % x.shape[2]).float()

    fix_integer_floor_divide(ct)
    x = torch.rand(1, 10, 3)
    traced = torch.jit.trace(TopRows().eval(), x)
    model = ct.convert(traced, inputs=[ct.TensorType(shape=x.shape)], convert_to="mlprogram", skip_model_load=True)
    ops_used = [
        op.type for fn in model.get_spec().mlProgram.functions.values() for op in fn.block_specializations[fn.opset].operations
    ]
    assert "floor_div" in ops_used and "gather_along_axis" in ops_used
