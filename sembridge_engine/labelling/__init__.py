"""Using a trained model: tile classification, sliding-window scene labelling and GIS writers."""
from .classify import TileResult, classify_files
from .scene import LabelResult, ScenePlan, SceneError, label_scene, plan_scene

__all__ = ["TileResult", "classify_files", "LabelResult", "ScenePlan", "SceneError", "label_scene", "plan_scene"]
