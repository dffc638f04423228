"""A tiny ONNX model with IS-Net's contract (1x3xSxS float32 in, `x/255 - 0.5`; 1x1xSxS
sigmoid map out), exported by torch the way any IS-Net ONNX is: the isnet backend's real
code path runs on it in a fraction of a second.

Its map is "how red a pixel is" (R against the mean of G and B), passed through a small
random 3x3 convolution that changes the file's bytes per `seed` but hardly its answer: a red
object on a grey background comes out as the object.
"""

from __future__ import annotations

import warnings
from pathlib import Path


def tiny_isnet(path: Path, side: int = 64, seed: int = 0, dynamic: bool = False) -> Path:
    import torch
    from torch import nn

    torch.manual_seed(seed)
    redness = nn.Conv2d(3, 1, 1)
    smooth = nn.Conv2d(1, 1, 3, padding=1)
    with torch.no_grad():
        redness.weight.copy_(torch.tensor([1.0, -0.5, -0.5]).view(1, 3, 1, 1) * 8)
        redness.bias.zero_()
        smooth.weight.copy_(torch.full((1, 1, 3, 3), 1 / 9) + 0.01 * torch.randn(1, 1, 3, 3))
        smooth.bias.zero_()
    model = nn.Sequential(redness, smooth, nn.Sigmoid()).eval()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    x = torch.zeros(1, 3, side, side)
    axes = {"input": {2: "height", 3: "width"}, "output": {2: "height", 3: "width"}} if dynamic else None
    with warnings.catch_warnings():  # the TorchScript exporter says it is legacy: it needs no onnxscript
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model, (x,), str(path), input_names=["input"], output_names=["output"],
                          dynamic_axes=axes, dynamo=False)
    return path
