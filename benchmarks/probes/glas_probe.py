"""Fast GlaS recipe probe: the levers of a weakly supervised GlaS map, measured quickly.

Decodes and resizes the GlaS images once and keeps them in memory; EfficientNet-Lite0 (shared
ImageNet weights) with a CAM (GAP), DeepMIL or top-k (WILDCAT-like, one modality) head; softmax CE
or one-vs-rest BCE. Prints, every few epochs, on the 18 *valcl* images of the split (never the
held-out test part, which the recipe must not be chosen on): dataset PxAP, accuracy, and per class
the mean per-image AP / mean foreground % (the per-image chance level); with ``map1``/``map0`` the
same with the malignant / benign map forced for every image. Exploration only: the recipe's numbers
come from ``histocam train`` with benchmarks/configs/glas*.yaml (docs/results.md).

  python benchmarks/probes/glas_probe.py --size 448 --crop 224 --eval 448 --method topk --loss bce
"""

import argparse
import time

import numpy as np
import timm
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

from histocam.data.glas import read_glas
from histocam.metrics import Batch, PxAP

p = argparse.ArgumentParser()
p.add_argument("--seed", type=int, default=0)
p.add_argument("--epochs", type=int, default=40)
p.add_argument("--size", type=int, default=256)
p.add_argument("--crop", type=int, default=224)
p.add_argument("--eval", type=int, default=224)
p.add_argument("--os", type=int, default=32)
p.add_argument("--norm", default="half")
p.add_argument("--feat", default="last")
p.add_argument("--lr", type=float, default=0.001)
p.add_argument("--hm", type=float, default=10)
p.add_argument("--bs", type=int, default=16)
p.add_argument("--method", default="cam")
p.add_argument("--every", type=int, default=10)
p.add_argument("--wd", type=float, default=1e-4)
p.add_argument("--k", type=float, default=0.1)
p.add_argument("--loss", default="ce")
p.add_argument("--kmin", type=float, default=0.0)
p.add_argument("--tag", default="")
a = p.parse_args()
torch.manual_seed(a.seed)
np.random.seed(a.seed)
torch.set_num_threads(2)
lay = read_glas(a.data, seed=a.seed)


def load(recs, S):
    X, M, Y = [], [], []
    for r in recs:
        im = (
            torch.from_numpy(np.asarray(Image.open(r.image_path).convert("RGB")).copy())
            .permute(2, 0, 1)
            .float()
            / 255
        )
        m = torch.from_numpy((np.asarray(Image.open(r.mask_path)) > 0).astype(np.float32))
        X.append(F.interpolate(im[None], (S, S), mode="bilinear", antialias=True, align_corners=False)[0])
        M.append(F.interpolate(m[None, None], (S, S), mode="nearest")[0, 0])
        Y.append(r.label)
    return torch.stack(X), torch.stack(M), torch.tensor(Y)


Xtr, Mtr, Ytr = load(lay.splits["train"], a.size)
Xva, Mva, Yva = load(lay.splits["valcl"], a.eval)
print("split: train", len(Ytr), "valcl", len(Yva), flush=True)
if a.norm == "half":
    mean, std = torch.tensor([0.5] * 3), torch.tensor([0.5] * 3)
else:
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
def norm(x):
    return (x - mean[:, None, None]) / std[:, None, None]


class Net(nn.Module):
    def __init__(s):
        super().__init__()
        m = timm.create_model(
            "efficientnet_lite0", num_classes=0, **({"output_stride": a.os} if a.os != 32 else {})
        )
        sd = torch.load(a.weights, weights_only=True)
        m.load_state_dict(sd, strict=False)
        s.m = m
        C = 1280 if a.feat == "head" else 320
        s.fc = nn.Linear(C, 2)
        if a.method == "deepmil":
            s.att = nn.Sequential(nn.Linear(C, 128), nn.Tanh())
            s.attg = nn.Sequential(nn.Linear(C, 128), nn.Sigmoid())
            s.attw = nn.Linear(128, 1)

    def forward(s, x):
        m = s.m
        f = m.forward_features(x) if a.feat == "head" else m.blocks(m.bn1(m.conv_stem(x)))
        if a.method == "topk":
            maps = torch.einsum("kd,bdhw->bkhw", s.fc.weight, f)
            flat = maps.flatten(2).sort(2, descending=True)[0]
            n = flat.shape[2]
            k = max(1, int(round(a.k * n)))
            logits = flat[:, :, :k].mean(2) + s.fc.bias
            if a.kmin > 0:
                logits = logits + 0.5 * flat[:, :, -max(1, int(round(a.kmin * n))) :].mean(2)
            return logits, maps
        if a.method == "cam":
            logits = s.fc(f.mean((2, 3)))
            maps = torch.einsum("kd,bdhw->bkhw", s.fc.weight, f)
            return logits, maps
        B, C, h, w = f.shape
        t = f.flatten(2).transpose(1, 2)
        e = s.attw(s.att(t) * s.attg(t)).squeeze(-1)
        att = e.softmax(1)
        z = (att[..., None] * t).sum(1)
        logits = s.fc(z)
        return logits, att.view(B, 1, h, w).expand(B, 2, h, w)


net = Net()
head = [p for n, p in net.named_parameters() if not n.startswith("m.")]
enc = [p for n, p in net.named_parameters() if n.startswith("m.")]
opt = torch.optim.SGD(
    [{"params": enc, "lr": a.lr}, {"params": head, "lr": a.lr * a.hm}],
    momentum=0.9,
    nesterov=True,
    weight_decay=a.wd,
)
sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, a.epochs)


def maps_of(X, Y, M, force=None):
    net.eval()
    outs = []
    corr = 0
    with torch.no_grad():
        for i in range(0, len(X), 16):
            lo, mp = net(norm(X[i : i + 16]))
            y = Y[i : i + 16]
            corr += int((lo.argmax(1) == y).sum())
            c = mp[torch.arange(len(y)), y if force is None else torch.full_like(y, force)]
            if a.method == "cam":
                c = c.clamp(min=0)
            mn = c.flatten(1).min(1)[0][:, None, None]
            mx = c.flatten(1).max(1)[0][:, None, None]
            c = torch.where(mx - mn > 0, (c - mn) / (mx - mn + 1e-12), torch.zeros_like(c))
            outs.append(
                F.interpolate(c[:, None], X.shape[-2:], mode="bilinear", align_corners=False)[:, 0].clamp(
                    0, 1
                )
            )
    S = torch.cat(outs)
    px = PxAP()
    px.update(Batch(maps=S, masks=M > 0))
    tot = px.compute()
    per = {}
    for cl in (0, 1):
        aps = []
        fg = []
        for k in torch.nonzero(Y == cl).flatten():
            q = PxAP()
            q.update(Batch(maps=S[k : k + 1], masks=M[k : k + 1] > 0))
            aps.append(q.compute())
            fg.append(float(M[k].mean()))
        per[cl] = (100 * np.mean(aps) if max(aps) <= 1 else np.mean(aps), 100 * np.mean(fg))
    return tot, 100 * corr / len(Y), per


def fmt(r):
    t, acc, per = r
    return (
        f"PxAP {t:.1f} acc {acc:.0f} ben {per[0][0]:.1f}/{per[0][1]:.1f} mal {per[1][0]:.1f}/{per[1][1]:.1f}"
    )


print(f"ep 0 val {fmt(maps_of(Xva, Yva, Mva))}", flush=True)
t0 = time.time()
seen = 0
for ep in range(1, a.epochs + 1):
    net.train()
    perm = torch.randperm(len(Ytr))
    for i in range(0, len(perm) - a.bs + 1, a.bs):
        idx = perm[i : i + a.bs]
        xs = []
        ms = []
        for k in idx:
            x = Xtr[k]
            oy, ox = np.random.randint(0, a.size - a.crop + 1, 2)
            x = x[:, oy : oy + a.crop, ox : ox + a.crop]
            if np.random.rand() < 0.5:
                x = x.flip(2)
            if np.random.rand() < 0.5:
                x = x.flip(1)
            x = torch.rot90(x, np.random.randint(4), (1, 2))
            xs.append(x)
        x = torch.stack(xs)
        # brightness/contrast/saturation jitter (light)
        b = 1 + (torch.rand(len(x), 1, 1, 1) - 0.5) * 0.4
        x = (x * b).clamp(0, 1)
        lo, _ = net(norm(x))
        loss = (
            F.cross_entropy(lo, Ytr[idx])
            if a.loss == "ce"
            else F.binary_cross_entropy_with_logits(lo, F.one_hot(Ytr[idx], 2).float())
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
        seen += len(idx)
    sched.step()
    if ep % a.every == 0 or ep == a.epochs:
        print(
            f"ep {ep} loss {loss.item():.3f} {seen / (time.time() - t0):.1f} img/s "
            f"val {fmt(maps_of(Xva, Yva, Mva))} || map1 {fmt(maps_of(Xva, Yva, Mva, 1))} "
            f"|| map0 {fmt(maps_of(Xva, Yva, Mva, 0))}",
            flush=True,
        )
