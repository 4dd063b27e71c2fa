"""Using a trained model: tile classification, sliding-window scene labelling and GIS writers.

Import from the modules (``labelling.scene``, ``labelling.options``, ...): the package itself
imports nothing, so the command line reads option defaults without importing torch.
"""
