"""ARC solver built on test-time training: tasks -> augment -> codec -> model -> ttt -> generate -> select -> run."""
__version__ = "0.1.0"
