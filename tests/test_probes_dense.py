"""Dense probes (heads, losses, training loop) on synthetic frozen features whose optimum is known."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tips_bench.metrics import angular_errors_deg, confusion_matrix, segmentation_scores
from tips_bench.probes.heads import (
    BinsDepthHead,
    DPTHead,
    LinearHead,
    bin_centers,
    bins_to_depth,
    to_normals,
)
from tips_bench.probes.losses import (
    angular_loss,
    gradient_loss,
    probe3d_depth_loss,
    segmentation_loss,
    silog_loss,
    uncertainty_angular_loss,
)
from tips_bench.probes.training import Schedule, lr_factor, predict, train_probe


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These tensors are tiny: one intra-op thread is faster and does not fight other processes for cores."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


H = W = 8  # token grid
OUT = (32, 32)  # target resolution: 4 pixels per patch
D = 16


def _batches(data: dict[str, torch.Tensor], batch_size: int):
    """Deterministic per-epoch shuffling, as the feature cache does."""
    n = next(iter(data.values())).shape[0]

    def batches(epoch: int):
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(1000 + epoch))
        for i in range(0, n, batch_size):
            idx = perm[i : i + batch_size]
            yield {k: v[idx] for k, v in data.items()}

    return batches


def _upsample(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=OUT, mode="bilinear", align_corners=False)


# ----------------------------------------------------------------------------------------------------------
# Segmentation
# ----------------------------------------------------------------------------------------------------------


def _seg_world(n: int, k: int, proj: torch.Tensor, g: torch.Generator):
    """Features = one-hot(patch label) @ proj + noise, split over two layers, plus an uninformative CLS.

    Labels are stripes one patch wide (rows for even images, columns for odd ones), constant within patches,
    at 32×32. Bilinear upsampling of patch logits gives every pixel weight >= 0.625 on its own patch along the
    one axis where labels change, so the per-patch optimum is also the per-pixel optimum (with 2-D patch
    mosaics, a corner pixel whose three neighbours share another class would be unreachable).
    """
    stripe = torch.randint(0, k, (n, H), generator=g)
    labels = torch.where(
        (torch.arange(n) % 2 == 0)[:, None, None],
        stripe[:, :, None].expand(n, H, W),
        stripe[:, None, :].expand(n, H, W),
    )
    feats = F.one_hot(labels, k).float() @ proj + 0.05 * torch.randn(n, H, W, proj.shape[1], generator=g)
    feats = feats.permute(0, 3, 1, 2).contiguous()
    target = labels.repeat_interleave(4, 1).repeat_interleave(4, 2)
    target[:, :2, :2] = 255  # a few ignored pixels
    return {"a": feats[:, : D // 2], "b": feats[:, D // 2 :], "cls": torch.randn(n, D // 2, generator=g), "y": target}


def test_linear_head_segmentation_reaches_optimum():
    g = torch.Generator().manual_seed(0)
    k = 5
    proj = torch.randn(k, D, generator=g)
    train, test = _seg_world(64, k, proj, g), _seg_world(16, k, proj, g)
    head = LinearHead([D // 2, D // 2], k, use_cls=True)

    def loss_fn(m, b):
        return segmentation_loss(m([b["a"], b["b"]], b["cls"], OUT), b["y"])

    out = train_probe(head, _batches(train, 16), loss_fn, Schedule(epochs=10, lr=3e-2), steps_per_epoch=4, seed=0)
    assert out["steps"] == 40 and out["final_loss"] < 0.1 and not head.training
    preds = list(predict(head, [test], lambda m, b: m([b["a"], b["b"]], b["cls"], OUT).argmax(1)))
    cm = confusion_matrix(preds[0].numpy(), test["y"].numpy(), k)
    assert segmentation_scores(cm)["mIoU"] > 99.0


def test_segmentation_loss_ignores_pixels():
    logits = torch.zeros(1, 3, 2, 2)
    logits[0, 1] = 5.0
    target = torch.full((1, 2, 2), 255)
    assert segmentation_loss(logits, target).item() == 0.0
    target[0, 0, 0] = 1
    expected = -torch.log_softmax(torch.tensor([0.0, 5.0, 0.0]), 0)[1]
    torch.testing.assert_close(segmentation_loss(logits, target), expected)


# ----------------------------------------------------------------------------------------------------------
# Depth
# ----------------------------------------------------------------------------------------------------------

MIN_DEPTH, MAX_DEPTH = 0.001, 10.0
BIN_WIDTH = (MAX_DEPTH - MIN_DEPTH) / 255  # 0.0392 m


def test_bins_to_depth_hand_cases():
    c = bin_centers(MIN_DEPTH, MAX_DEPTH)
    assert c[0].item() == pytest.approx(MIN_DEPTH) and c[-1].item() == pytest.approx(MAX_DEPTH)
    for k in (0, 17, 255):
        logits = torch.full((1, 256, 2, 3), -1.0)
        logits[:, k] = 1.0
        # eps = 0: relu leaves bin k only -> exactly c_k
        torch.testing.assert_close(bins_to_depth(logits, MIN_DEPTH, MAX_DEPTH, eps=0.0), c[k].expand(1, 1, 2, 3))
        # default eps = 0.1 adds a uniform floor of mass 25.6 / (L + 25.6) pulling towards the mean centre
        logits[:, k] = 1e5
        floor = 25.6 / (1e5 + 25.6)
        want = (1 - floor) * c[k] + floor * c.mean()
        torch.testing.assert_close(bins_to_depth(logits, MIN_DEPTH, MAX_DEPTH), want.expand(1, 1, 2, 3))
        torch.testing.assert_close(bins_to_depth(logits, MIN_DEPTH, MAX_DEPTH, norm="softmax"), c[k].expand(1, 1, 2, 3))
    # all-negative logits: uniform -> mean centre
    flat = bins_to_depth(-torch.ones(1, 256, 1, 1), MIN_DEPTH, MAX_DEPTH)
    assert flat.item() == pytest.approx((MIN_DEPTH + MAX_DEPTH) / 2, rel=1e-5)


def test_silog_hand_cases():
    g = torch.Generator().manual_seed(0)
    gt = 0.5 + 4.5 * torch.rand(2, 1, 6, 5, generator=g)
    # scale invariance with lam = 1: pred = c * gt gives d = log c everywhere, var(d) = 0
    assert silog_loss(2.5 * gt, gt, None, lam=1.0).item() < 1e-4
    # lam = 0.85: 10 * sqrt((1 - 0.85) * log(c)^2)
    assert silog_loss(2.5 * gt, gt).item() == pytest.approx(10 * math.sqrt(0.15) * math.log(2.5), rel=1e-5)
    # hand case: d = (log 2, 0) on the two valid pixels -> 10 * sqrt(mean d^2 - 0.85 mean(d)^2)
    pred, gt2 = torch.tensor([[2.0, 1.0, 7.0]]), torch.tensor([[1.0, 1.0, 0.0]])  # gt 0 is invalid
    l2 = math.log(2.0)
    want = 10 * math.sqrt(l2**2 / 2 - 0.85 * (l2 / 2) ** 2)
    assert silog_loss(pred, gt2).item() == pytest.approx(want, rel=1e-5)
    valid = torch.tensor([[True, False, True]])
    assert silog_loss(pred, gt2, valid).item() == pytest.approx(10 * math.sqrt(0.15) * l2, rel=1e-5)
    # gradient term: zero for a constant log ratio, positive otherwise; probe3d = silog + 0.5 * grad
    assert gradient_loss(2.5 * gt, gt).item() == pytest.approx(0.0, abs=1e-6)
    bumpy = gt * torch.exp(0.1 * torch.randn(gt.shape, generator=g))
    want = silog_loss(bumpy, gt) + 0.5 * gradient_loss(bumpy, gt)
    torch.testing.assert_close(probe3d_depth_loss(bumpy, gt), want)
    far = gt.clone()
    far[0, 0, 0, 0] = 50.0
    torch.testing.assert_close(probe3d_depth_loss(bumpy, far, max_depth=10.0), probe3d_depth_loss(bumpy, far, far < 10))


def test_linear_head_bins_depth_reaches_optimum():
    """Features linear in per-patch depth; GT = bilinear upsampling of the patch depths.

    The optimum is exact: the expectation over bins spans [c_0, c_255] continuously (no bin-width floor),
    and BinsDepthHead resizes depth (not logits) bilinearly, as the GT was made. Gradient descent on the
    eps-floored linear normalisation converges slowly (400 steps reach 0.054-0.074 m over three world seeds),
    so the bound is 0.1 m = 2.6 bin widths, 16x below the ~1.6 m RMSE of the best constant (patch depths
    uniform in [1, 9] m, smoothed by the upsampling).
    """
    g = torch.Generator().manual_seed(0)
    u, v = torch.randn(D, 1, 1, generator=g), torch.randn(D, 1, 1, generator=g)

    def world(n):
        depth = 1 + 8 * torch.rand(n, 1, H, W, generator=g)
        feats = depth * u + v + 0.01 * torch.randn(n, D, H, W, generator=g)
        return {"f": feats, "gt": _upsample(depth)}

    train, test = world(64), world(16)
    head = BinsDepthHead(LinearHead([D], 256), MIN_DEPTH, MAX_DEPTH)

    def loss_fn(m, b):
        return silog_loss(m([b["f"]], None, OUT), b["gt"])

    train_probe(head, _batches(train, 16), loss_fn, Schedule(epochs=100, lr=5e-2), steps_per_epoch=4, seed=0)
    (pred,) = predict(head, [test], lambda m, b: m([b["f"]], None, OUT))
    assert pred.shape == (16, 1, *OUT)
    rmse = (pred - test["gt"]).square().mean().sqrt().item()
    assert rmse < 0.1, rmse


# ----------------------------------------------------------------------------------------------------------
# Normals
# ----------------------------------------------------------------------------------------------------------


def test_angular_losses_hand_cases():
    x = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1)
    y = torch.tensor([0.0, 3.0, 0.0]).view(1, 3, 1, 1)
    assert angular_loss(x, y).item() == pytest.approx(math.pi / 2, rel=1e-6)
    assert angular_loss(x, 2 * x).item() == pytest.approx(0.0, abs=2e-3)  # acos(1 - 1e-6) = 1.4e-3
    both, gts = torch.cat([x, x], 0), torch.cat([y, x], 0)
    assert angular_loss(both, gts).item() == pytest.approx(math.pi / 4, abs=1e-3)
    assert angular_loss(both, gts, torch.tensor([True, False]).view(2, 1, 1)).item() == pytest.approx(math.pi / 2)
    # Bae et al. / probe3d: log(1 + exp(-k*pi)) - log(1 + k^2) + k * theta
    for kappa, theta_gt, theta in ((1.0, y, math.pi / 2), (3.0, x, 1.4142e-3)):
        want = math.log1p(math.exp(-kappa * math.pi)) - math.log1p(kappa**2) + kappa * theta
        got = uncertainty_angular_loss(x, torch.full((1, 1, 1, 1), kappa), theta_gt).item()
        assert got == pytest.approx(want, abs=1e-4)
    normals, kappa = to_normals(torch.tensor([3.0, 0.0, 4.0, -50.0]).view(1, 4, 1, 1))
    torch.testing.assert_close(normals.flatten(), torch.tensor([0.6, 0.0, 0.8]))
    assert kappa.item() == pytest.approx(0.01, abs=1e-6)  # elu(-50) + 1.01
    assert to_normals(torch.ones(1, 3, 1, 1))[1] is None


def test_linear_head_normals_median_below_5_degrees():
    g = torch.Generator().manual_seed(0)
    proj = torch.randn(3, D, generator=g)

    def world(n):
        n_patch = F.normalize(torch.randn(n, 3, H, W, generator=g) + torch.tensor([0.0, 0.0, 1.5]).view(1, 3, 1, 1))
        feats = torch.einsum("bchw,cd->bdhw", n_patch, proj) + 0.02 * torch.randn(n, D, H, W, generator=g)
        return {"f": feats, "n": F.normalize(_upsample(n_patch))}

    train, test = world(64), world(16)
    head = LinearHead([D], 4)

    def loss_fn(m, b):
        normals, kappa = to_normals(m([b["f"]], None, OUT))
        return angular_loss(normals, b["n"]) + 0.1 * uncertainty_angular_loss(normals, kappa, b["n"])

    train_probe(head, _batches(train, 16), loss_fn, Schedule(epochs=10, lr=3e-2), steps_per_epoch=4, seed=0)
    (out,) = predict(head, [test], lambda m, b: m([b["f"]], None, OUT))
    normals, kappa = to_normals(out)
    err = angular_errors_deg(normals.numpy(), test["n"].numpy(), axis=1)
    assert np.median(err) < 5.0, np.median(err)
    assert kappa.min().item() >= 0.01


# ----------------------------------------------------------------------------------------------------------
# Heads
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dims", [[12], [6, 8, 10, 12]])
def test_dpt_head_shapes_and_gradients(dims):
    g = torch.Generator().manual_seed(0)
    h, w = 5, 7  # non-square, odd: the stride-2 scale is 3x4
    maps = [torch.randn(2, d, h, w, generator=g) for d in dims]
    cls = torch.randn(2, 12, generator=g)
    head = DPTHead(dims, 3, hidden=16)
    assert head(maps, cls).shape == (2, 3, 16 * h, 16 * w)
    out = head(maps, cls, out_size=(70, 98))
    assert out.shape == (2, 3, 70, 98)
    out.square().mean().backward()
    for name, p in head.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert all(m.grad is None for m in maps) and cls.grad is None
    with pytest.raises(ValueError, match="cls"):
        head(maps, None)
    assert DPTHead(dims, 2, hidden=8, use_cls=False)(maps, None, (9, 11)).shape == (2, 2, 9, 11)


def test_linear_head_upsample_eval_shortcut_matches_dinov2_order():
    g = torch.Generator().manual_seed(0)
    head = LinearHead([6, 4], 7, use_cls=True, upsample=4)
    head.bn.running_mean.normal_(generator=g)
    head.bn.running_var.uniform_(0.5, 2.0, generator=g)
    maps, cls = [torch.randn(2, 6, 3, 5, generator=g), torch.randn(2, 4, 3, 5, generator=g)], torch.randn(2, 4)
    head.eval()
    got = head(maps, cls, out_size=(21, 35))
    x = torch.cat([*maps, cls[:, :, None, None].expand(-1, -1, 3, 5)], 1)
    x = F.interpolate(x, scale_factor=4, mode="bilinear", align_corners=False)
    want = F.interpolate(head.classifier(head.bn(x)), size=(21, 35), mode="bilinear", align_corners=False)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    head.train()
    assert head(maps, cls).shape == (2, 7, 12, 20)


# ----------------------------------------------------------------------------------------------------------
# Training loop
# ----------------------------------------------------------------------------------------------------------


def test_lr_schedule_hand_values():
    assert [lr_factor(s, 10, 2) for s in (0, 1)] == [0.5, 1.0]
    assert lr_factor(2, 10, 2) == 1.0 and lr_factor(6, 10, 2) == pytest.approx(0.5)
    assert lr_factor(9, 10, 2) == pytest.approx(0.5 * (1 + math.cos(math.pi * 7 / 8)))
    assert lr_factor(4, 8, 0, "linear") == 0.5 and lr_factor(7, 8, 0, "constant") == 1.0
    with pytest.raises(ValueError):
        Schedule(epochs=1, lr=1.0, optimizer="lamb")


def test_training_is_deterministic_per_seed():
    g = torch.Generator().manual_seed(0)
    data = {"f": torch.randn(8, 6, 3, 4, generator=g), "cls": torch.randn(8, 6, generator=g)}
    data["y"] = torch.randint(0, 3, (8, 12, 16), generator=g)
    schedule = Schedule(epochs=2, lr=1e-2, warmup_epochs=0.5)

    def run(seed: int) -> dict[str, torch.Tensor]:
        torch.manual_seed(1234 + seed)  # the caller's RNG state must not matter
        head = DPTHead([6], 3, hidden=8)
        train_probe(
            head,
            _batches(data, 4),
            lambda m, b: segmentation_loss(m([b["f"]], b["cls"], (12, 16)), b["y"]),
            schedule,
            steps_per_epoch=2,
            seed=seed,
        )
        return {k: v.clone() for k, v in head.state_dict().items()}

    flag = torch.are_deterministic_algorithms_enabled()
    a, b, c = run(3), run(3), run(4)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)
    # the loop restores the caller's RNG state and the deterministic-algorithms flag
    assert torch.are_deterministic_algorithms_enabled() == flag
    head = LinearHead([6], 3)
    before = torch.get_rng_state()
    train_probe(
        head,
        _batches(data, 4),
        lambda m, b: segmentation_loss(m([b["f"]], None, (12, 16)), b["y"]),
        schedule,
        2,
        seed=0,
    )
    assert torch.equal(torch.get_rng_state(), before)
