"""SSM matcher: symmetric InfoNCE (eqs. 5-7) and the two encoders."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from resources import demo_project
from sembridge_engine.models import Matcher, info_nce

torch.set_num_threads(1)


def test_info_nce_matches_the_formula_by_hand():
    a = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    b = torch.tensor([[3.0, 0.0], [1.0, 1.0]])
    t = 0.5
    cos = [[1.0, 0.0], [1 / math.sqrt(2), 1 / math.sqrt(2)]]  # cos[i][j] = cos(a_i, b_j)
    v_to_g = [-math.log(math.exp(cos[i][i] / t) / sum(math.exp(cos[i][j] / t) for j in range(2))) for i in range(2)]
    g_to_v = [-math.log(math.exp(cos[j][j] / t) / sum(math.exp(cos[i][j] / t) for i in range(2))) for j in range(2)]
    expected = 0.5 * (sum(v_to_g) / 2 + sum(g_to_v) / 2)
    assert info_nce(a, b, t).item() == pytest.approx(expected, rel=1e-6)


def test_info_nce_is_symmetric_and_prefers_aligned_pairs():
    torch.manual_seed(0)
    a = F.normalize(torch.randn(16, 32), dim=1)
    b = F.normalize(a + 0.1 * torch.randn(16, 32), dim=1)
    assert info_nce(a, b, 0.07).item() == pytest.approx(info_nce(b, a, 0.07).item(), rel=1e-6)
    shuffled = b[torch.randperm(16)]
    assert info_nce(a, b, 0.07) < info_nce(a, shuffled, 0.07)
    with pytest.raises(ValueError, match="equal shape"):
        info_nce(a, b[:3], 0.07)


def _real_ms_batch(count: int = 4) -> torch.Tensor:
    from sembridge_engine.data.readers import read_image
    from sembridge_engine.data.transforms import preprocess_arrays

    paths = [sorted((demo_project() / "ms" / name).glob("*.tif"))[0] for name in ("Forest", "River", "Highway", "AnnualCrop")]
    tiles = preprocess_arrays([read_image(path) for path in paths[:count]], 32, None)
    return (tiles - tiles.mean((0, 2, 3), keepdim=True)) / tiles.std((0, 2, 3), keepdim=True)


def test_matcher_embeds_unit_vectors_and_learns_on_real_tiles():
    torch.manual_seed(0)
    ms = _real_ms_batch()
    pseudo_rgb = ms[:, [3, 2, 1]]  # EuroSAT B04, B03, B02
    matcher = Matcher("shufflenet_v2_x0_5", ms_channels=13, embed_dim=16)
    v, g = matcher.encode_ms(ms), matcher.encode_rgb(pseudo_rgb)
    assert v.shape == g.shape == (4, 16)
    torch.testing.assert_close(v.norm(dim=1), torch.ones(4))
    optimiser = torch.optim.Adam(matcher.parameters(), lr=1e-3)
    losses = []
    for _ in range(6):
        loss = matcher.loss(ms, pseudo_rgb)
        optimiser.zero_grad()
        loss.backward()
        losses.append(loss.item())
        optimiser.step()
    assert all(math.isfinite(value) for value in losses)
    assert losses[-1] < losses[0]
    for part in (matcher.ms_encoder, matcher.rgb_encoder, matcher.ms_head, matcher.rgb_head):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in part.parameters())
