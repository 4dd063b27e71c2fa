"""Backbones with distillation taps and the SSM matcher."""

from .backbones import BACKBONES, ArchSpec, Backbone, Features, available_backbones, build_backbone
from .matcher import Matcher, info_nce

__all__ = ["BACKBONES", "ArchSpec", "Backbone", "Features", "Matcher", "available_backbones",
           "build_backbone", "info_nce"]
