"""Targets written the plug-in way: each folder is one row of the stage table and nothing else.

A folder holds the row with its options model (``__init__.py``), the stage that makes the
artifact (``stage.py``) and the runner that executes it (``runner.py``). exporter/kinds.py
registers the rows named in ``BUILTIN`` exactly as it registers an installed plug-in's
(``cnnexport.targets`` entry points): nothing else in exporter/ names these targets.
"""

BUILTIN = (
    "exporter.targets.executorch:ROW",  # Android / embedded: ExecuTorch .pte on XNNPACK
    # "exporter.targets.litert:ROW",  # Android: LiteRT .tflite (formerly TensorFlow Lite)
)
