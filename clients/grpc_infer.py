"""Call the bundled models over gRPC with tritonclient: metadata, config and an inference.

python clients/grpc_infer.py [--url localhost:8001]
"""

import argparse

import numpy as np
import tritonclient.grpc as grpcclient


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default="localhost:8001")
    args = parser.parse_args()

    client = grpcclient.InferenceServerClient(args.url)
    print("server ready:", client.is_server_ready())
    print(client.get_model_metadata("simple_onnx", as_json=True))
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    tensor = grpcclient.InferInput("INPUT0", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    result = client.infer("simple_onnx", [tensor])
    print("2x + 1 =", result.as_numpy("OUTPUT0"))


if __name__ == "__main__":
    main()
