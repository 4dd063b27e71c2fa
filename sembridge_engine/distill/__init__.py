"""Distillation: plug-in KD losses, the SKA Planner with CORAL, and SSM/DynM matching."""

from .losses import (KD_LOSSES, PSSM_DEFAULTS, PSSM_DESCRIPTION, KDInputs, KDLoss, KDLossSpec, KDSettingError,
                     build_kd_loss, check_kd_settings, pssm_weights)
from .matching import dynm_epochs, dynm_match, dynm_match_loop, random_class_consistent_match, ssm_match
from .planner import Planner, coral

__all__ = ["KD_LOSSES", "PSSM_DEFAULTS", "PSSM_DESCRIPTION", "KDInputs", "KDLoss", "KDLossSpec", "KDSettingError",
           "Planner", "build_kd_loss", "check_kd_settings", "coral", "dynm_epochs", "dynm_match", "dynm_match_loop",
           "pssm_weights", "random_class_consistent_match", "ssm_match"]
