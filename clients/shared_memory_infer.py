"""Send inputs and receive outputs through system shared memory (same host only).

python clients/shared_memory_infer.py [--url localhost:8001]
"""

import argparse

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.utils.shared_memory as shm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default="localhost:8001")
    args = parser.parse_args()

    client = grpcclient.InferenceServerClient(args.url)
    x = np.arange(16, dtype=np.float32)
    size = x.nbytes
    inputs_handle = shm.create_shared_memory_region("trident_in", "/trident_in", size)
    outputs_handle = shm.create_shared_memory_region("trident_out", "/trident_out", size)
    try:
        shm.set_shared_memory_region(inputs_handle, [x])
        client.register_system_shared_memory("trident_in", "/trident_in", size)
        client.register_system_shared_memory("trident_out", "/trident_out", size)
        tensor = grpcclient.InferInput("INPUT0", [16], "FP32")
        tensor.set_shared_memory("trident_in", size)
        output = grpcclient.InferRequestedOutput("OUTPUT0")
        output.set_shared_memory("trident_out", size)
        client.infer("identity", [tensor], outputs=[output])
        print(shm.get_contents_as_numpy(outputs_handle, np.float32, [16]))
    finally:
        client.unregister_system_shared_memory()
        shm.destroy_shared_memory_region(inputs_handle)
        shm.destroy_shared_memory_region(outputs_handle)


if __name__ == "__main__":
    main()
