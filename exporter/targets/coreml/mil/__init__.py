"""A reference interpreter for Core ML ML programs, in NumPy.

coremltools can convert on Linux but only macOS can run a model. To prove a `.mlpackage`
computes what the PyTorch model computes without a Mac, this package reads the package
itself (the model spec protobuf and the `weights/weight.bin` blob file) and executes the
MIL program op by op:

    package.py   read Manifest.json, the Model protobuf and weight blobs (BlobFile format)
    values.py    MIL values (immediate and blob) -> NumPy arrays, honouring each dtype
    ops.py       one NumPy function per MIL op
    program.py   compile a MIL function into steps and run it

Numerics: every op computes in float32 (float64 for reductions that need it) and its result
is rounded to the op's declared output dtype, so an fp16 program rounds like fp16 after every
op. Core ML's GPU/Neural Engine may accumulate differently inside an op; the fp16 tolerance in
exporter.verify covers that. An op this interpreter does not implement raises UnsupportedOp
when the program is loaded, which verification reports as `skipped`, never `pass`.
"""

from exporter.targets.coreml.mil.program import Program, load_program

__all__ = ["Program", "load_program"]
