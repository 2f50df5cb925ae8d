"""Runs inside the isolated LiteRT environment: an exported PyTorch program (.pt2) -> a float .tflite.

It imports only torch and litert_torch (never cnnexport: the isolated environment does not
have it). Arguments: PROGRAM.pt2 OUT.tflite LAYOUT (nchw|nhwc) MAX_BATCH (0 = batch fixed at
the program's example size). Prints one JSON line with what it did.
"""

import json
import sys


def main(program: str, out: str, layout: str, max_batch: int) -> dict:
    import logging

    logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)
    import litert_torch
    import torch

    exported = torch.export.load(program)
    module = exported.module()
    for part in module.modules():  # an exported module refuses eval(); litert-torch reads the flag
        part.training = False
    example = tuple(exported.example_inputs[0])
    with torch.no_grad():
        outputs = module(*example)
    flat = torch.utils._pytree.tree_leaves(outputs)
    if layout == "nhwc":
        # NCHW in the graph, NHWC at its edges: the input and every 4-D output
        dense = [i for i, value in enumerate(flat) if value.dim() == 4]
        module = litert_torch.to_channel_last_io(module, args=[0], outputs=dense or None)
        example = (example[0].permute(0, 2, 3, 1).contiguous(),)
    dynamic = None
    if max_batch:
        dynamic = ({0: torch.export.Dim("batch", min=1, max=max_batch)},)
    # no timing in what this returns: the details land in a manifest a rerun must reproduce byte for byte
    converted = litert_torch.convert(module, example, dynamic_shapes=dynamic)
    converted.export(out)
    return {
        "converter": "litert-torch " + getattr(litert_torch, "__version__", "?"),
        "dynamic_batch": bool(max_batch),
        "outputs": len(flat),
    }


if __name__ == "__main__":
    result = main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
    print(json.dumps(result))
