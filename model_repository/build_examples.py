"""Regenerate the tiny framework-backend examples in this repository:

- simple_onnx/1/model.onnx: OUTPUT0 = INPUT0 * 2 + 1, FP32 [-1, 4]. No config.pbtxt: the
  server completes it from the file (max_batch_size 4, dynamic batching).
- simple_torchscript/1/model.pt: OUTPUT__0 = INPUT__0 * 2 + 1, FP32 [-1, 4], traced
  TorchScript. TorchScript records no types or shapes, so config.pbtxt declares them.

Run from anywhere: python model_repository/build_examples.py (needs onnx and torch).
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent


def build_onnx() -> Path:
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("INPUT0", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("OUTPUT0", TensorProto.FLOAT, ["batch", 4])
    two = helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])
    one = helper.make_tensor("one", TensorProto.FLOAT, [], [1.0])
    nodes = [
        helper.make_node("Mul", ["INPUT0", "two"], ["doubled"]),
        helper.make_node("Add", ["doubled", "one"], ["OUTPUT0"]),
    ]
    graph = helper.make_graph(nodes, "simple_onnx", [x], [y], initializer=[two, one])
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="trident"
    )
    model.ir_version = 8  # loads in every onnxruntime >= 1.14
    onnx.checker.check_model(model)
    path = HERE / "simple_onnx" / "1" / "model.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def build_torchscript() -> Path:
    import torch

    class TimesTwoPlusOne(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * 2 + 1

    module = torch.jit.trace(TimesTwoPlusOne().eval(), torch.zeros(1, 4))
    path = HERE / "simple_torchscript" / "1" / "model.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.save(module, str(path))
    return path


if __name__ == "__main__":
    for built in (build_onnx(), build_torchscript()):
        print(f"wrote {built.relative_to(HERE)} ({built.stat().st_size} bytes)")
