"""Call the bundled `add_sub` model over HTTP with tritonclient.

python clients/http_infer.py [--url localhost:8000]
"""

import argparse

import numpy as np
import tritonclient.http as httpclient


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default="localhost:8000")
    args = parser.parse_args()

    client = httpclient.InferenceServerClient(args.url)
    a = np.arange(16, dtype=np.float32).reshape(1, 16)
    b = np.ones((1, 16), dtype=np.float32)
    inputs = [
        httpclient.InferInput("INPUT0", list(a.shape), "FP32"),
        httpclient.InferInput("INPUT1", list(b.shape), "FP32"),
    ]
    inputs[0].set_data_from_numpy(a)  # sent as binary data
    inputs[1].set_data_from_numpy(b, binary_data=False)  # sent as JSON
    outputs = [
        httpclient.InferRequestedOutput("OUTPUT0"),
        httpclient.InferRequestedOutput("OUTPUT1"),
    ]
    result = client.infer("add_sub", inputs, outputs=outputs)
    print("sum:       ", result.as_numpy("OUTPUT0"))
    print("difference:", result.as_numpy("OUTPUT1"))


if __name__ == "__main__":
    main()
