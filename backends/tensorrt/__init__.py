"""The TensorRT backend (`backend: "tensorrt"`, platform `tensorrt_plan`, model.plan).

Neither `tensorrt` nor torch is imported until a model needs them, so the server loads without
them and a TensorRT model then fails to load with a message saying what is missing.
"""
