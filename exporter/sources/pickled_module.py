"""A whole pickled model (``torch.save(model)``): read only with --trust-pickle.

Unpickling a module runs code from the file, so the restricted unpickler refuses it and the
loader unpickles it fully only when the user passed ``--trust-pickle`` (exporter/loading/safe_pickle.py);
this source takes the module it returned. A converted (int8) or meta-device model is refused.
"""

from __future__ import annotations

from exporter.loading.probe import CheckpointFile
from exporter.loading.raw import RawCheckpoint
from exporter.loading.weights import refuse_meta_module, refuse_quantized_module
from exporter.sources import Source


def recognises(found: CheckpointFile) -> bool:
    from torch import nn

    return isinstance(found.obj, nn.Module)


def read(found: CheckpointFile) -> RawCheckpoint:
    refuse_quantized_module(found.path, found.obj)
    refuse_meta_module(found.path, found.obj)
    return RawCheckpoint(form="pickled-module", module=found.obj)


OBJECT = Source(
    name="pickled-module", stage="object", recognises=recognises, read=read, reads="torch.save(model), with --trust-pickle"
)
