"""The descriptor pool that holds Trident's generated protocol messages.

Kept apart from protobuf's default pool so that tritonclient's modules, which define the same
"inference.*" names, can be imported in the same process.
"""

from google.protobuf import descriptor_pool

POOL = descriptor_pool.DescriptorPool()
