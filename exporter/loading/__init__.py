"""Reading checkpoints: every file and folder form, the architecture that fits, the loaded reference model.

Imports run one way: checkpoint -> arch_fit / hf_folder -> checkpoint_read / modules -> the rest.
"""
