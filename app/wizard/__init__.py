"""The training wizard, one module per page (see training_wizard.py for the whole)."""
from app.wizard.training_wizard import TrainingWizard

__all__ = ["TrainingWizard"]
