"""SemBridge Studio desktop app (Qt). Holds no training math: it drives sembridge_engine."""
