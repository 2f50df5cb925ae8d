"""ExecuTorch programs (.pte): PyTorch's own on-device runtime, with the XNNPACK delegate on CPU.

The row and its options are in row.py; the stage (stage.py) and the runner (runner.py) are
imported only when a program is made or opened, so the CLI stays fast without executorch.
"""

INSTALL_HINT = "pip install 'cnnexport[executorch]'"
