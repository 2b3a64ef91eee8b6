"""The ONNX Runtime backend (`backend: "onnxruntime"`, platform `onnxruntime_onnx`, model.onnx).

Nothing here imports onnxruntime until the registry imports `backend.py` for a model that needs
it.
"""
