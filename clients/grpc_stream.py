"""Stream responses from the decoupled `word_stream` model over gRPC.

python clients/grpc_stream.py [--url localhost:8001] [--text "some words"]
"""

import argparse
import queue

import numpy as np
import tritonclient.grpc as grpcclient


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default="localhost:8001")
    parser.add_argument("--text", default="hello from a streaming model")
    args = parser.parse_args()

    responses: queue.Queue = queue.Queue()
    client = grpcclient.InferenceServerClient(args.url)
    client.start_stream(callback=lambda result, error: responses.put((result, error)))
    tensor = grpcclient.InferInput("text_input", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([args.text.encode()], dtype=np.object_))
    client.async_stream_infer("word_stream", [tensor], enable_empty_final_response=True)
    while True:
        result, error = responses.get(timeout=10)
        if error is not None:
            raise error
        response = result.get_response()
        if response.parameters["triton_final_response"].bool_param and not response.outputs:
            break
        print(result.as_numpy("text_output")[0].decode())
    client.stop_stream()


if __name__ == "__main__":
    main()
