"""lawm training: models, data, losses, training loops, controller, planning, evaluation."""

__version__ = "0.1.0"
