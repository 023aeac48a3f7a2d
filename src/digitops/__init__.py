"""digitops: an end-to-end MLOps system for handwritten-digit recognition.

The library layer: stages are plain functions over directories (see `digitops.stages`).
"""

__version__ = "0.1.0"
