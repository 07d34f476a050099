"""Top-down CAMs against grad-cam / torchcam (test-only oracles) and slow references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from histocam.maps import (
    ISCAM,
    SSCAM,
    AblationCAM,
    GradCAM,
    GradCAMPlusPlus,
    LayerCAM,
    ScoreCAM,
    SmoothGradCAMPlusPlus,
    XGradCAM,
)
from histocam.maps.normalize import minmax_normalize

CLASSES = torch.tensor([0, 3, 1])  # mixed classes in one batch


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()

        def block(i, o):
            return nn.Sequential(nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU())

        self.b1, self.b2, self.b3 = block(3, 8), block(8, 12), block(12, 16)
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        f = self.b3(F.max_pool2d(self.b2(F.max_pool2d(self.b1(x), 2)), 2))
        return self.fc(f.mean(dim=(2, 3)))


@pytest.fixture
def net() -> Net:
    torch.manual_seed(0)
    model = Net()
    model.train()  # BN running stats differ from batch stats: mode matters
    with torch.no_grad():
        model(torch.randn(8, 3, 28, 44))  # non-trivial running statistics
    return model


@pytest.fixture
def images() -> torch.Tensor:
    return torch.randn(3, 3, 28, 44, generator=torch.Generator().manual_seed(1))


def renormalise(maps: torch.Tensor) -> np.ndarray:
    """The oracle's final step: min–max again at full resolution (after its resize)."""
    return minmax_normalize(maps, relu=False).numpy()


@pytest.mark.parametrize("ours,theirs", [
    (GradCAM, "GradCAM"), (GradCAMPlusPlus, "GradCAMPlusPlus"), (XGradCAM, "XGradCAM"),
    (LayerCAM, "LayerCAM"),
])
def test_grad_family_equals_pytorch_grad_cam(net, images, ours, theirs) -> None:
    import pytorch_grad_cam
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    mine = ours(net, ["b3"])(images, CLASSES)
    net.eval()
    with getattr(pytorch_grad_cam, theirs)(model=net, target_layers=[net.b3]) as cam:
        reference = cam(input_tensor=images, targets=[ClassifierOutputTarget(int(c))
                                                       for c in CLASSES])
    assert np.allclose(renormalise(mine), reference, atol=1e-5)


def test_gradcam_equals_torchcam_at_low_resolution(net, images) -> None:
    from torchcam.methods import GradCAM as TorchcamGradCAM

    net.eval()
    engine = GradCAM(net, ["b3"])
    with TorchcamGradCAM(net, target_layer="b3", input_shape=(3, 28, 44)) as extractor:
        scores = net(images)
        theirs = extractor(class_idx=CLASSES.tolist(), scores=scores)[0]  # normalised, low res
    # torchcam divides by (max + 1e-8): with this tiny net's small CAM values that ε is visible
    theirs = theirs / theirs.flatten(1).amax(1).view(-1, 1, 1)
    ours_low = []
    for i in range(3):  # our low-resolution map via the engine internals, per sample
        logits, maps = engine.compute(images[i : i + 1], CLASSES[i : i + 1])
        ours_low.append(maps)
    ours = torch.cat(ours_low)
    up = F.interpolate(theirs[:, None], size=(28, 44), mode="bilinear", align_corners=False)[:, 0]
    assert torch.allclose(ours, up.clamp(0, 1), atol=1e-5)


def test_layercam_multilayer_fusion_equals_torchcam(net, images) -> None:
    from torchcam.methods import LayerCAM as TorchcamLayerCAM

    ours = LayerCAM(net, ["b2", "b3"])(images, CLASSES)
    net.eval()
    with TorchcamLayerCAM(net, target_layer=["b2", "b3"], input_shape=(3, 28, 44)) as extractor:
        scores = net(images)
        cams = extractor(class_idx=CLASSES.tolist(), scores=scores)
        fused = extractor.fuse_cams(cams)
    expected = F.interpolate(minmax_normalize(fused, relu=True)[:, None], size=(28, 44),
                             mode="bilinear", align_corners=False)[:, 0]
    assert torch.allclose(ours, expected, atol=1e-5)


def _activations(net, images, layer):
    store = {}
    handle = getattr(net, layer).register_forward_hook(lambda m, i, o: store.setdefault("a", o))
    net.eval()
    with torch.no_grad():
        logits = net(images)
    handle.remove()
    return logits, store["a"]


def test_scorecam_equals_slow_reference(net, images) -> None:
    ours = ScoreCAM(net, ["b3"], chunk_size=7)(images, CLASSES)
    _, a = _activations(net, images, "b3")
    ref = []
    with torch.no_grad():
        for b in range(3):
            weights = []
            for k in range(a.shape[1]):
                m = F.interpolate(a[b, k][None, None], size=(28, 44), mode="bilinear",
                                  align_corners=False)[0, 0]
                m = (m - m.min()) / (m.max() - m.min()) if m.max() > m.min() else m * 0
                p = torch.softmax(net(images[b : b + 1] * m), dim=1)[0, CLASSES[b]]
                weights.append(p)
            ref.append((torch.stack(weights)[:, None, None] * a[b]).sum(0))
    expected = F.interpolate(minmax_normalize(torch.stack(ref), relu=True)[:, None], (28, 44),
                             mode="bilinear", align_corners=False)[:, 0]
    assert torch.allclose(ours, expected, atol=1e-5)


def test_ablationcam_equals_slow_reference(net, images) -> None:
    ours = AblationCAM(net, ["b3"], chunk_size=5)(images, CLASSES)
    logits, a = _activations(net, images, "b3")
    ref = []
    with torch.no_grad():
        for b in range(3):
            y = logits[b, CLASSES[b]]
            weights = []
            for k in range(a.shape[1]):
                def zero_k(_m, _i, out, k=k):
                    out = out.clone()
                    out[:, k] = 0
                    return out

                h = net.b3.register_forward_hook(zero_k)
                yk = net(images[b : b + 1])[0, CLASSES[b]]
                h.remove()
                weights.append((y - yk) / (y + 1e-7))
            ref.append((torch.stack(weights)[:, None, None] * a[b]).sum(0))
    expected = F.interpolate(minmax_normalize(torch.stack(ref), relu=True)[:, None], (28, 44),
                             mode="bilinear", align_corners=False)[:, 0]
    assert torch.allclose(ours, expected, atol=1e-5)


def test_smooth_gradcampp_without_noise_is_gradcampp(net, images) -> None:
    smooth = SmoothGradCAMPlusPlus(net, ["b3"], num_samples=3, noise=0.0)(images, CLASSES)
    plain = GradCAMPlusPlus(net, ["b3"])(images, CLASSES)
    assert torch.allclose(smooth, plain, atol=1e-6)
    noisy = SmoothGradCAMPlusPlus(net, ["b3"], num_samples=3, noise=0.3,
                                  generator=torch.Generator().manual_seed(0))(images, CLASSES)
    assert not torch.equal(noisy, plain)


ALL = [
    lambda n: GradCAM(n, ["b3"]), lambda n: GradCAMPlusPlus(n, ["b3"]),
    lambda n: XGradCAM(n, ["b3"]), lambda n: LayerCAM(n, ["b2", "b3"]),
    lambda n: ScoreCAM(n, ["b3"], chunk_size=11), lambda n: AblationCAM(n, ["b3"], chunk_size=9),
    lambda n: ISCAM(n, ["b3"], num_samples=2, chunk_size=16),
    lambda n: SSCAM(n, ["b3"], num_samples=2, generator=torch.Generator().manual_seed(0)),
    lambda n: SmoothGradCAMPlusPlus(n, ["b3"], num_samples=2, noise=0.0),
]


@pytest.mark.parametrize("make", ALL)
def test_batch_equals_per_sample_and_state_restored(net, images, make) -> None:
    hooks_before = sum(len(m._forward_hooks) for m in net.modules())
    grads_before = [p.grad for p in net.parameters()]
    engine = make(net)
    if isinstance(engine, SSCAM):  # noise draws differ between calls: compare same-seed calls
        batch = engine(images, CLASSES)
        assert batch.shape == (3, 28, 44)
    else:
        batch = engine(images, CLASSES)
        single = torch.cat([engine(images[i : i + 1], CLASSES[i : i + 1]) for i in range(3)])
        assert torch.allclose(batch, single, atol=1e-5)
    assert torch.isfinite(batch).all() and batch.min() >= 0 and batch.max() <= 1
    assert net.training  # restored to train mode
    assert sum(len(m._forward_hooks) for m in net.modules()) == hooks_before
    assert all(p.grad is None for p in net.parameters()) and grads_before == [None] * len(
        grads_before)
    assert all(p.requires_grad for p in net.parameters())  # unfrozen again after the call


def test_state_restored_after_an_exception(net, images) -> None:
    hooks_before = sum(len(m._forward_hooks) for m in net.modules())
    net.b1.requires_grad_(False)  # a partly frozen model stays exactly as it was
    flags = [p.requires_grad for p in net.parameters()]
    engine = GradCAM(net, ["b3"])
    with pytest.raises(RuntimeError):
        engine(images, torch.tensor([0, 9, 1]))  # class 9 does not exist
    assert net.training
    assert sum(len(m._forward_hooks) for m in net.modules()) == hooks_before
    assert [p.requires_grad for p in net.parameters()] == flags


def test_graph_starts_at_the_target_layer(net, images) -> None:
    """Nothing before the target layer is recorded for backward, and an in-place operation after
    it neither fails nor alters the captured activation: maps equal those of a model without it."""
    seen = {}

    def record(_module, _inputs, output) -> None:
        seen["b1"] = output.requires_grad

    net.b1.register_forward_hook(record)
    expected = GradCAM(net, ["b3.1"])(images, CLASSES)  # BatchNorm output, before the ReLU
    assert seen["b1"] is False
    net.b3[2] = nn.ReLU(inplace=True)
    assert torch.allclose(GradCAM(net, ["b3.1"])(images, CLASSES), expected, atol=1e-6)


def test_predicted_class_when_no_target(net, images) -> None:
    engine = GradCAM(net, ["b3"])
    logits, maps = engine.compute(images)
    assert torch.allclose(maps, engine(images, logits.argmax(1)), atol=1e-6)


def test_unknown_layer_name(net) -> None:
    with pytest.raises(KeyError, match="no module named 'b9'"):
        GradCAM(net, ["b9"])
