#!/usr/bin/python3
"""export_bench_models.py — the ImageNet-size ONNX models of tests/bench/bench_ort.sh (issue 12).

Random weights, eval mode, opset 13, input "input" 1x3x224x224 with a dynamic batch axis,
output "logits" (tests/experiments/export_torchvision.py's export):
    resnet18, resnet50   torchvision's architectures
    vit_s16              torchvision's VisionTransformer class: patch 16, 12 layers, 6 heads,
                         hidden 384, MLP 1536, 224x224, 1000 classes
Each goes to OUT_DIR/<name>.onnx once: a file already there is kept (the cache; delete it to
export again). Needs torch and torchvision: Debian's /usr/bin/python3 here.
usage: /usr/bin/python3 tests/bench/export_bench_models.py OUT_DIR [resnet18 resnet50 vit_s16]
"""
import os
import sys

import torch
import torchvision

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "experiments"))
from export_torchvision import export  # noqa: E402


def build(name):
    if name == "vit_s16":
        from torchvision.models.vision_transformer import VisionTransformer
        return VisionTransformer(image_size=224, patch_size=16, num_layers=12, num_heads=6,
                                 hidden_dim=384, mlp_dim=1536)
    if name in ("resnet18", "resnet50"):
        return getattr(torchvision.models, name)(weights=None)
    raise SystemExit(f"export_bench_models: unknown model '{name}' (resnet18 resnet50 vit_s16)")


def main():
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    torch.set_num_threads(2)
    for name in sys.argv[2:] or ["resnet18", "resnet50", "vit_s16"]:
        path = os.path.join(out, name + ".onnx")
        if os.path.exists(path):
            continue
        torch.manual_seed(0)
        model = build(name).eval()
        # written beside and renamed: an interrupted export leaves no truncated cache entry
        export(model, path + ".part", name)
        os.replace(path + ".part", path)


if __name__ == "__main__":
    main()
