"""TorchScript archives (.ts): torch.jit.trace or torch.jit.script, run by torch.jit.load.

row.py: the row and its options; stage.py makes the archive; runner.py runs it.
"""
