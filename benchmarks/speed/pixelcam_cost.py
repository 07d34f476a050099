"""Inference cost of class + map (PixelCAM App. G / Table 11).

Same backbone, random weights (timing only), eval mode, no autograd bookkeeping except where a
method needs gradients: (a) the plain classifier forward (CAM/GAP head), (b) PixelCAM's
``localize_with_logits`` (logits + FG probability map at input size), (c) a GradCAM++ map, and
the decoder methods: (d) NEGEV (frozen classifier + U-Net decoder), (e) Max-Min (localiser, then
the classifier on the masked image: two encoder passes), (f) U-Net. All measured interleaved in one
run. Targets: (b)/(a) <= 1.05; the paper reports (c)/(b) = 4.6 and NEGEV 10–12 ms vs PixelCAM
8.8 ms (NEGEV/PixelCAM ≈ 1.2) on a GPU.

Usage: python benchmarks/speed/pixelcam_cost.py [--backbone resnet50] [--size 224] [--batch 16]
       [--device cuda]  (on a GPU each timed call ends with a device synchronisation; the paper's
       Table 11 times one 224x224 image: --batch 1)
"""

from __future__ import annotations

import argparse

import torch
from timing import best_interleaved

from histocam.methods import create_method


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    args = parser.parse_args()
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else lambda: None
    torch.manual_seed(0)
    backbone = {"name": args.backbone}
    models = {name: create_method({"name": name, "backbone": backbone}, 2).eval().to(device)
              for name in ("cam", "pixelcam", "gradcampp", "negev", "maxmin", "unet")}
    x = torch.randn(args.batch, 3, args.size, args.size, device=device)
    y = torch.randint(0, 2, (args.batch,), device=device)

    def timed(fn):
        return lambda: (fn(), sync())

    with torch.no_grad():
        t_plain, t_pix, t_gpp, t_negev, t_maxmin, t_unet = best_interleaved([
            timed(lambda: models["cam"](x))] + [
            timed(lambda m=models[name]: m.localize_with_logits(x, y))
            for name in ("pixelcam", "gradcampp", "negev", "maxmin", "unet")], args.repeats)
    ms = lambda t: 1000 * t / args.batch  # noqa: E731
    where = (torch.cuda.get_device_name(device) if device.type == "cuda"
             else f"CPU, {torch.get_num_threads()} threads")
    print(f"{args.backbone} at {args.size}, batch {args.batch}, {where}")
    print(f"plain classifier forward: {ms(t_plain):.1f} ms/img")
    print(f"PixelCAM class + map:     {ms(t_pix):.1f} ms/img -> {t_pix / t_plain:.3f}x the plain "
          "forward (target <= 1.05)")
    print(f"GradCAM++ class + map:    {ms(t_gpp):.1f} ms/img -> GradCAM++ / PixelCAM = "
          f"{t_gpp / t_pix:.2f} (paper, GPU: 4.6)")
    for name, t in (("NEGEV", t_negev), ("Max-Min", t_maxmin), ("U-Net", t_unet)):
        print(f"{name + ' class + map:':26s}{ms(t):.1f} ms/img -> {t / t_plain:.2f}x the plain "
              f"forward, {t / t_pix:.2f}x PixelCAM")


if __name__ == "__main__":
    main()
