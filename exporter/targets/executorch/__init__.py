"""ExecuTorch programs (.pte): PyTorch's own on-device runtime, with the XNNPACK delegate on CPU.

The row and its options are in row.py; the stage (stage.py) and the runner (runner.py) are
imported only when a program is made or opened, so the CLI stays fast without executorch.
"""

INSTALL_HINT = "pip install 'cnnexport[executorch]'"


def quiet_torchao_import() -> None:
    """torchao registers an Enum with torch's pytree on import, which torch 2.14 logs a deprecation warning for."""
    import logging

    logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)
