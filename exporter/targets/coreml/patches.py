"""What the Core ML stage changes while tracing, so coremltools can convert the traced graph.

* ``wrap_for_tracing``: the model plus the in-model 1/std multiply of an image input and the
  classifier's softmax;
* ``fixed_size_adaptive_pools``: adaptive pools that are plain pools at the traced size;
* ``traced_as_convertible_ops``: aliases recorded under the names coremltools converts;
* ``fix_scalar_cast``: coremltools 9.0's ``int(tensor)`` folding under NumPy 2.4;
* ``fix_integer_floor_divide``: coremltools 9.0 turning ``int // int`` into a float.

Each patch is undone afterwards (the module, torch), except the converter re-registration.
"""

from __future__ import annotations

import contextlib


def wrap_for_tracing(module, inv_std, softmax: bool):
    import torch

    class CoreMLWrapper(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = module
            self.has_scale = inv_std is not None
            if inv_std is not None:
                self.register_buffer("inv_std", torch.tensor(inv_std, dtype=torch.float32).reshape(1, -1, 1, 1))

        def forward(self, x):
            if self.has_scale:
                x = x * self.inv_std
            out = self.inner(x)
            if not softmax:
                return out  # every output (a multi-output model is wrapped to return a tuple at load)
            return torch.softmax(out[0] if isinstance(out, (tuple, list)) else out, dim=1)

    return CoreMLWrapper().eval()


@contextlib.contextmanager
def fixed_size_adaptive_pools(module, example):
    """Swap nn.AdaptiveAvg/MaxPool2d for the equivalent fixed AvgPool2d/MaxPool2d while tracing.

    coremltools converts adaptive pooling only when the input size is fully known or the output
    is 1x1, so with a flexible batch VGG/AlexNet-style heads (AdaptiveAvgPool2d((7, 7))) fail.
    Where the recorded input size is a multiple of the output size the adaptive pool IS a plain
    pool with kernel = stride = input/output (identical numbers), which converts with any batch.
    The module is restored afterwards. Yields the number of pools swapped.
    """
    import torch

    sizes: dict = {}
    pools = [
        (name, m) for name, m in module.named_modules() if isinstance(m, (torch.nn.AdaptiveAvgPool2d, torch.nn.AdaptiveMaxPool2d))
    ]

    def recorder(name):
        def hook(_module, args):
            sizes.setdefault(name, tuple(args[0].shape[-2:]))  # returns None: the input is unchanged

        return hook

    hooks = [m.register_forward_pre_hook(recorder(name)) for name, m in pools]
    try:
        with torch.no_grad():
            module(example)
    finally:
        for hook in hooks:
            hook.remove()
    swapped = []
    for name, pool in pools:
        if name not in sizes:
            continue
        out = pool.output_size if isinstance(pool.output_size, tuple) else (pool.output_size, pool.output_size)
        (h, w), (oh, ow) = sizes[name], (out[0] or sizes[name][0], out[1] or sizes[name][1])
        if (oh, ow) == (1, 1) or h % oh or w % ow:
            continue  # 1x1 converts already; a non-multiple has overlapping windows
        kernel = (h // oh, w // ow)
        fixed = (
            torch.nn.AvgPool2d(kernel, kernel)
            if isinstance(pool, torch.nn.AdaptiveAvgPool2d)
            else torch.nn.MaxPool2d(kernel, kernel)
        )
        parent = module.get_submodule(name.rsplit(".", 1)[0]) if "." in name else module
        setattr(parent, name.rsplit(".", 1)[-1], fixed)
        swapped.append((parent, name.rsplit(".", 1)[-1], pool))
    try:
        yield len(swapped)
    finally:
        for parent, attr, pool in swapped:
            setattr(parent, attr, pool)


@contextlib.contextmanager
def traced_as_convertible_ops():
    """While tracing, record two aliases as the ops coremltools converts.

    coremltools has no converter for ``aten::zero_`` or ``aten::swapaxes``. ``t.zero_()`` is
    ``t.fill_(0)``, which coremltools turns into a tensor assignment when applied to a slice
    (Swin V2 zeroes the key third of its qkv bias that way every forward); ``swapaxes`` is
    ``transpose`` (MaxViT's window partition). ``addcmul`` (no converter either; timm's
    ConvNeXt-V2 GlobalResponseNorm) is ``input + value * t1 * t2``. Same operations, only the
    recorded names change.
    """
    import torch

    def addcmul(input, tensor1, tensor2, *, value=1):  # noqa: A002 - torch.addcmul's own parameter name
        return input + value * tensor1 * tensor2

    patches = [
        (torch, "addcmul", addcmul),
        (torch.Tensor, "addcmul", addcmul),
        (torch.Tensor, "zero_", lambda self: self.fill_(0)),
        (torch.Tensor, "swapaxes", lambda self, a, b: self.transpose(a, b)),
        (torch.Tensor, "swapdims", lambda self, a, b: self.transpose(a, b)),
        (torch, "swapaxes", lambda x, a, b: x.transpose(a, b)),
        (torch, "swapdims", lambda x, a, b: x.transpose(a, b)),
    ]
    originals = [(owner, attr, getattr(owner, attr)) for owner, attr, _ in patches]
    try:
        for owner, attr, replacement in patches:
            setattr(owner, attr, replacement)
        yield
    finally:
        for owner, attr, original in originals:
            setattr(owner, attr, original)


_applied: set[str] = set()  # the converter fixes in place (each is registered once per process)


def _converter_internals(ct):
    """(Builder, the torch frontend's ops module, register_torch_op, MIL types) of coremltools 9.0, whose
    converters the fixes below replace; None on a later coremltools (fixed upstream) or a layout we do not know."""
    from packaging.version import Version

    if Version(ct.__version__) > Version("9.0"):
        return None
    try:
        from coremltools.converters.mil import Builder  # coremltools' own spelling is mb
        from coremltools.converters.mil.frontend.torch import ops
        from coremltools.converters.mil.frontend.torch.torch_op_registry import register_torch_op
        from coremltools.converters.mil.mil import types

        ops._cast, ops._get_inputs, ops.floor_divide, ops.promote_input_dtypes  # noqa: B018 - the names the fixes use
    except (ImportError, AttributeError):  # leave coremltools alone
        return None
    return Builder, ops, register_torch_op, types


def fix_scalar_cast(ct) -> bool:
    """Work around coremltools 9.0 failing on ``int(tensor)`` under NumPy 2.4.

    coremltools 9.0 folds a traced ``aten::Int`` of a one-element shape tensor with
    ``int(array([n]))``, which NumPy >= 2.4 refuses ("only 0-dimensional arrays can be
    converted to Python scalars", apple/coremltools#2633, fixed upstream after 9.0).
    torchvision's ShuffleNetV2 channel shuffle traces to exactly that. We re-register the
    ``int``/``bool`` converters (coremltools' documented ``register_torch_op(override=True)``)
    with a folding that reads the single element first; everything else is coremltools' own
    code. Returns whether the fix is in place.
    """
    if "scalar_cast" in _applied:
        return True
    internals = _converter_internals(ct)
    if internals is None:
        return False
    import numpy as np

    mb, ops, register_torch_op, _ = internals
    upstream_cast, get_inputs = ops._cast, ops._get_inputs

    def cast(context, node, dtype, dtype_name):
        x = get_inputs(context, node, expected=1)[0]
        if x.can_be_folded_to_const() and not isinstance(x.val, dtype) and np.size(x.val) == 1:
            context.add(mb.const(val=dtype(np.asarray(x.val).reshape(()).item()), name=node.name), node.name)
            return
        upstream_cast(context, node, dtype, dtype_name)

    def _int(context, node):  # the names coremltools registers these converters under
        cast(context, node, int, "int32")

    def _bool(context, node):
        cast(context, node, bool, "bool")

    register_torch_op(_int, torch_alias=["int"], override=True)
    register_torch_op(_bool, torch_alias=["bool"], override=True)
    _applied.add("scalar_cast")
    return True


def fix_integer_floor_divide(ct) -> bool:
    """Keep ``int // int`` an integer, as torch does.

    coremltools 9.0 casts every ``floor_divide`` result to fp32 ("PyTorch's floor_divide always returns
    fp32", which is not so for integer inputs), so an index computed with ``//`` can no longer index:
    the top-k of an NMS-free YOLO head (YOLO26: ``anchor = index // classes``) then fails to convert
    ("gather_along_axis expects int32 ... got fp32"). We re-register the converter (coremltools'
    documented ``register_torch_op(override=True)``): integer inputs stay integer, everything else
    goes to coremltools' own converter. Returns whether the fix is in place.
    """
    if "floor_divide" in _applied:
        return True
    internals = _converter_internals(ct)
    if internals is None:
        return False
    mb, ops, register_torch_op, types = internals
    upstream, get_inputs, promote = ops.floor_divide, ops._get_inputs, ops.promote_input_dtypes

    def floor_divide(context, node):
        x, y = promote(get_inputs(context, node, expected=2))
        if types.is_int(x.dtype) and types.is_int(y.dtype):
            context.add(mb.floor_div(x=x, y=y, name=node.name))
            return
        upstream(context, node)

    register_torch_op(floor_divide, override=True)
    _applied.add("floor_divide")
    return True
