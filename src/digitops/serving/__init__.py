"""The prediction service: preprocessing, the ONNX predictor, the FastAPI app, the request log.

Imports numpy, Pillow, onnxruntime, FastAPI and prometheus_client only; never torch, Lightning,
Ray, Captum or Evidently (a test enforces it), so serving and Lambda images stay small.
"""
