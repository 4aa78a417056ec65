#!/usr/bin/python3
"""Export torchvision architectures with random weights to ONNX (CONVERT.md, (c)).

No pretrained weights can be fetched here, so these runs are about structure: that the
conversion goes through end to end, and what it does to stored floats and MACs.
usage: export_torchvision.py OUT_DIR [resnet18 resnet50 densenet121 ...]
Files go to OUT_DIR/<name>.onnx (keep them out of git: models/ is ignored).
"""
import os
import sys

import torch
import torchvision


def main():
    out = sys.argv[1]
    names = sys.argv[2:] or ["resnet18", "resnet50", "densenet121"]
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(0)
    torch.set_num_threads(2)
    for name in names:
        model = getattr(torchvision.models, name)(weights=None).eval()
        # torch 1.13 exports AvgPool2d(2, 2) (DenseNet's transitions) as a zero Pad + AveragePool
        # when count_include_pad is set; with padding 0 the flag changes nothing, and without it
        # the export is a plain AveragePool (the importer has no Pad).
        for mod in model.modules():
            if isinstance(mod, torch.nn.AvgPool2d) and mod.padding in (0, (0, 0)):
                mod.count_include_pad = False
        export(model, os.path.join(out, name + ".onnx"), name)


def export(model, path, name, opset=13):
    """Writes model (eval mode) to path as ONNX: input "input" 1x3x224x224 with a dynamic batch
    axis, output "logits"; prints its parameter count. (tests/bench/export_bench_models.py too.)"""
    torch.onnx.export(model, torch.zeros(1, 3, 224, 224), path, opset_version=opset,
                      input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    params = sum(p.numel() for p in model.parameters())
    print(f"{name}: {params} parameters -> {path}", flush=True)


if __name__ == "__main__":
    main()
