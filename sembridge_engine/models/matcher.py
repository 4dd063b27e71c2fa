"""The SSM matcher M = (M_V, M_G): contrastive MS / pseudo-RGB encoders (eqs. 5-7)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .backbones import build_backbone


def info_nce(a: Tensor, b: Tensor, temperature: float) -> Tensor:
    """Symmetric InfoNCE: row i of `a` and row i of `b` are the positive pair (eq. 7).

    logits = cosine(a_i, b_j) / temperature; L = 1/2 (CE(a->b) + CE(b->a)), so swapping the
    arguments gives the same value.
    """
    if a.shape != b.shape or a.dim() != 2:
        raise ValueError(f"info_nce needs two (B, D) tensors of equal shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    logits = F.normalize(a, dim=1) @ F.normalize(b, dim=1).T / temperature
    targets = torch.arange(a.shape[0], device=a.device)
    return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets))


def projection_head(in_dim: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, in_dim), nn.ReLU(inplace=True), nn.Linear(in_dim, out_dim))


class Matcher(nn.Module):
    """M_V encodes all MS bands, M_G encodes 3-band RGB (pseudo-RGB in training, real RGB when matching)."""

    def __init__(self, arch: str, ms_channels: int, embed_dim: int = 128, temperature: float = 0.07,
                 pretrained: str = ""):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.arch = arch
        self.ms_channels = ms_channels
        self.embed_dim = embed_dim
        self.temperature = temperature
        self.ms_encoder = build_backbone(arch, ms_channels, num_classes=0, pretrained=pretrained)
        self.rgb_encoder = build_backbone(arch, 3, num_classes=0, pretrained=pretrained)
        self.ms_head = projection_head(self.ms_encoder.embedding_dim, embed_dim)
        self.rgb_head = projection_head(self.rgb_encoder.embedding_dim, embed_dim)

    def encode_ms(self, ms: Tensor) -> Tensor:
        return F.normalize(self.ms_head(self.ms_encoder(ms)), dim=1)

    def encode_rgb(self, rgb: Tensor) -> Tensor:
        return F.normalize(self.rgb_head(self.rgb_encoder(rgb)), dim=1)

    def loss(self, ms: Tensor, pseudo_rgb: Tensor) -> Tensor:
        return info_nce(self.encode_ms(ms), self.encode_rgb(pseudo_rgb), self.temperature)
