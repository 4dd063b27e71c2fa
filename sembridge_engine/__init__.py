"""SemBridge engine: data, models, distillation, training, export and labelling. Never imports Qt."""

__version__ = "0.1.0"
