"""LiteRT models (.tflite, formerly TensorFlow Lite): what Android apps run, converted by Google's litert-torch.

The row is in row.py, the stage in stage.py, the runner in runner.py. litert-torch's pins conflict with ours (it would
downgrade pydantic and typing_extensions), so the conversion runs in an isolated environment
cnnexport creates and reuses (exporter/isolated.py); the LiteRT interpreter and ai-edge-quantizer
install beside our pins and run here, so verification uses the real runtime in this process.
"""

INSTALL_HINT = "pip install 'cnnexport[litert]'"
CONVERTER = ("litert-torch==0.10.0",)  # what the isolated environment installs
