"""Core ML ML programs (.mlpackage), converted on Linux and verified there by a MIL interpreter.

row.py: the row and its options; stage.py converts (patches.py: coremltools fixes); runner.py
runs a package with Core ML on macOS, mil_runner.py with the NumPy interpreter in mil/ elsewhere.
"""
