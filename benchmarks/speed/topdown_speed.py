"""Top-down CAM speed: histocam vs grad-cam (pytorch-grad-cam 1.5.7) in the same run, and the cost
of every histocam method relative to one plain forward.

Part 1: maps for a batch of ``--batch`` images at 224 on resnet18 and resnet50 (random init, eval
mode, last stage as target; LayerCAM on the last stage, as grad-cam's default), best of
``--repeats``; target: >= 3x faster for GradCAM++ and LayerCAM on CPU.
Part 2: per-image cost of each method / one plain forward of the same batch (survey Table 4,
PixelCAM Table 11); the confidence family on a batch of 1 (one forward per channel).

Usage: python benchmarks/speed/topdown_speed.py [--batch 32] [--repeats 2] [--models resnet18 resnet50]
"""

from __future__ import annotations

import argparse

import timm
import torch
from timing import best_interleaved

from histocam import cams as ours


def best_time(fn, repeats: int) -> float:
    return best_interleaved([fn], repeats)[0]




def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--models", nargs="+", default=["resnet18", "resnet50"])
    parser.add_argument("--skip-confidence", action="store_true")
    args = parser.parse_args()
    import pytorch_grad_cam
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    torch.manual_seed(0)
    print(f"torch threads {torch.get_num_threads()}, batch {args.batch} at 224")
    for name in args.models:
        model = timm.create_model(name, num_classes=2).eval()
        layer = model.layer4
        x = torch.randn(args.batch, 3, 224, 224)
        classes = torch.randint(0, 2, (args.batch,))
        def plain_forward():
            with torch.no_grad():
                model(x)

        forward = float("inf")
        targets = [ClassifierOutputTarget(int(c)) for c in classes]
        print(f"\n{name}:")
        for method in ("GradCAM", "GradCAMPlusPlus", "XGradCAM", "LayerCAM"):
            engine = getattr(ours, method)(model, [layer])
            ref = getattr(pytorch_grad_cam, method)(model=model, target_layers=[layer])
            forward_t, t_ours, t_ref = best_interleaved(
                [plain_forward, lambda: engine(x, classes),
                 lambda: ref(input_tensor=x, targets=targets)], args.repeats)
            forward = min(forward, forward_t)
            ref.activations_and_grads.release()
            print(f"  {method:16s} ours {1000 * t_ours / args.batch:7.1f} ms/img, grad-cam "
                  f"{1000 * t_ref / args.batch:7.1f} ms/img -> {t_ref / t_ours:4.1f}x faster; "
                  f"ours / forward = {t_ours / forward:5.2f} (forward {1000 * forward / args.batch:.1f})")
        if args.skip_confidence or name != args.models[0]:
            continue
        one = x[:1]
        with torch.no_grad():
            f1 = best_time(lambda: model(one), args.repeats)
        for method, kwargs in (("SmoothGradCAMPlusPlus", {"num_samples": 10}),
                               ("ScoreCAM", {"chunk_size": 64}),
                               ("ISCAM", {"chunk_size": 64, "num_samples": 10}),
                               ("AblationCAM", {"chunk_size": 64}),
                               ("SSCAM", {"chunk_size": 64, "num_samples": 5})):
            engine = getattr(ours, method)(model, [layer], **kwargs)
            t = best_time(lambda: engine(one, classes[:1]), 1)
            print(f"  {method:16s} ours {1000 * t:9.1f} ms for 1 image = {t / f1:7.1f} forwards")


if __name__ == "__main__":
    main()
