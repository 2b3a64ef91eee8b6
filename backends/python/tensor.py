"""`pb_utils.Tensor`: a named numpy array (or, through DLPack, a framework's device tensor).

Input tensors wrap the arrays the frontend decoded, without copies. Datatypes are Triton's
TRITONSERVER_DataType numbers (what `Tensor.triton_dtype()` returns).
"""

from __future__ import annotations

import ctypes
import sys
from typing import Any

import numpy as np

from trident.runtime.types import Tensor as RuntimeTensor

from .errors import TritonModelException

# TRITONSERVER_DataType <-> v2 datatype names.
TRITON_DTYPE_TO_DATATYPE: dict[int, str] = {
    1: "BOOL",
    2: "UINT8",
    3: "UINT16",
    4: "UINT32",
    5: "UINT64",
    6: "INT8",
    7: "INT16",
    8: "INT32",
    9: "INT64",
    10: "FP16",
    11: "FP32",
    12: "FP64",
    13: "BYTES",
    14: "BF16",
}
DATATYPE_TO_TRITON_DTYPE: dict[str, int] = {v: k for k, v in TRITON_DTYPE_TO_DATATYPE.items()}
TYPE_BYTES = 13
TYPE_BF16 = 14

#: TRITONSERVER_DataType -> numpy dtype (BF16 travels as raw uint16 words, BYTES as objects).
TRITON_DTYPE_TO_NUMPY: dict[int, np.dtype] = {
    1: np.dtype(np.bool_),
    2: np.dtype(np.uint8),
    3: np.dtype(np.uint16),
    4: np.dtype(np.uint32),
    5: np.dtype(np.uint64),
    6: np.dtype(np.int8),
    7: np.dtype(np.int16),
    8: np.dtype(np.int32),
    9: np.dtype(np.int64),
    10: np.dtype(np.float16),
    11: np.dtype(np.float32),
    12: np.dtype(np.float64),
    13: np.dtype(np.object_),
    14: np.dtype(np.uint16),
}
_NUMPY_TO_TRITON_DTYPE: dict[np.dtype, int] = {
    dtype: code for code, dtype in TRITON_DTYPE_TO_NUMPY.items() if code != TYPE_BF16
}

# DLPack device types and dtype codes (dlpack.h).
_DL_CPU = 1
_DL_CUDA_HOST = 3
_DL_BFLOAT = 4


def triton_dtype_of(dtype: np.dtype) -> int:
    """The TRITONSERVER_DataType of a numpy dtype; raises for dtypes Triton cannot carry."""
    code = _NUMPY_TO_TRITON_DTYPE.get(dtype)
    if code is not None:
        return code
    if dtype.kind in ("S", "U", "O"):
        return TYPE_BYTES
    raise TritonModelException(
        f"numpy dtype {dtype} has no Triton datatype; use bool, (u)int8-64, float16/32/64, or "
        "np.object_ (bytes) arrays"
    )


class Tensor:
    """`Tensor(name, numpy_array)`: an input or output tensor.

    Non-contiguous arrays are made contiguous (as Triton does); str arrays become bytes.
    """

    __slots__ = ("_array", "_device_tensor", "_name", "_triton_dtype")

    def __init__(self, name: str, numpy_array: Any, triton_dtype: int | None = None) -> None:
        if not isinstance(name, str):
            raise TypeError(f"Tensor name must be a str, got {type(name).__name__}")
        array = numpy_array if isinstance(numpy_array, np.ndarray) else np.asarray(numpy_array)
        if array.dtype.kind == "U":
            # Triton rejects str arrays; encoding them is what every such model then does.
            array = np.char.encode(array, "utf-8").astype(np.object_)
        if triton_dtype is not None:
            wanted = TRITON_DTYPE_TO_NUMPY.get(triton_dtype)
            if wanted is None:
                raise TritonModelException(f"unknown Triton datatype {triton_dtype!r}")
            if array.dtype != wanted:
                array = array.view(wanted)  # reinterpret the bytes, as Triton does
        else:
            triton_dtype = triton_dtype_of(array.dtype)
        if not array.flags.c_contiguous:
            array = np.ascontiguousarray(array)
        self._name = name
        self._array: np.ndarray | None = array
        self._triton_dtype = triton_dtype
        self._device_tensor: Any = None

    @classmethod
    def _wrap(cls, name: str, array: np.ndarray, triton_dtype: int) -> Tensor:
        """A tensor around an array the server already checked (no conversion, no copy)."""
        tensor = cls.__new__(cls)
        tensor._name = name
        tensor._array = array
        tensor._triton_dtype = triton_dtype
        tensor._device_tensor = None
        return tensor

    def name(self) -> str:
        return self._name

    def triton_dtype(self) -> int:
        """The TRITONSERVER_DataType number (e.g. 11 for FP32, 13 for BYTES)."""
        return self._triton_dtype

    def as_numpy(self) -> np.ndarray:
        if self._array is None:
            raise TritonModelException("Tensor is stored in GPU and cannot be converted to NumPy.")
        return self._array

    def shape(self) -> list[int]:
        source = self._array if self._array is not None else self._device_tensor
        return [int(dim) for dim in source.shape]

    def is_cpu(self) -> bool:
        return self._array is not None

    # ------------------------------------------------------------------------- DLPack

    def to_dlpack(self) -> Any:
        """A DLPack capsule viewing this tensor's memory (no copy)."""
        if self._triton_dtype == TYPE_BYTES:
            raise TritonModelException("DLPack does not have support for string tensors.")
        if self._array is None:
            return self._device_tensor.__dlpack__()
        try:
            return self._array.__dlpack__()
        except BufferError:
            # Read-only arrays (views of a request body) cannot be exported; hand out a copy.
            return np.array(self._array).__dlpack__()

    def __dlpack__(self, stream: Any = None) -> Any:
        if self._array is None:
            return self._device_tensor.__dlpack__(stream=stream)
        return self.to_dlpack()

    def __dlpack_device__(self) -> tuple[int, int]:
        if self._array is None:
            return tuple(self._device_tensor.__dlpack_device__())  # type: ignore[return-value]
        return (_DL_CPU, 0)

    @staticmethod
    def from_dlpack(name: str, dlpack_tensor: Any) -> Tensor:
        """A tensor sharing the memory of a DLPack capsule or of any object with `__dlpack__`
        (torch, cupy, jax, numpy arrays). GPU tensors need torch installed to be carried."""
        if hasattr(dlpack_tensor, "__dlpack__"):
            device_type = int(dlpack_tensor.__dlpack_device__()[0])
            producer: Any = dlpack_tensor
            is_bfloat = False
        else:
            device_type, device_id, is_bfloat = _capsule_info(dlpack_tensor)
            producer = _CapsuleProducer(dlpack_tensor, (device_type, device_id))
        if device_type in (_DL_CPU, _DL_CUDA_HOST) and not is_bfloat:
            try:
                array = np.from_dlpack(producer)
            except (BufferError, TypeError, RuntimeError, ValueError):
                if producer is not dlpack_tensor:  # a capsule is consumed by the first try
                    raise
            else:
                return Tensor._wrap(name, array, triton_dtype_of(array.dtype))
        return _from_torch(name, _torch().from_dlpack(dlpack_tensor))

    def __repr__(self) -> str:
        datatype = TRITON_DTYPE_TO_DATATYPE.get(self._triton_dtype, "?")
        where = "" if self.is_cpu() else ", gpu"
        return f"Tensor({self._name!r}, {datatype}, shape={self.shape()}{where})"


def _from_torch(name: str, tensor: Any) -> Tensor:
    torch = _torch()
    if tensor.device.type != "cpu":
        result = Tensor.__new__(Tensor)
        result._name = name
        result._array = None
        result._device_tensor = tensor
        result._triton_dtype = (
            TYPE_BF16
            if tensor.dtype == torch.bfloat16
            else triton_dtype_of(np.dtype(str(tensor.dtype).removeprefix("torch.")))
        )
        return result
    if tensor.dtype == torch.bfloat16:
        return Tensor._wrap(name, tensor.view(torch.int16).numpy().view(np.uint16), TYPE_BF16)
    array = tensor.numpy()
    return Tensor._wrap(name, array, triton_dtype_of(array.dtype))


def host_array(tensor: Tensor) -> np.ndarray:
    """The tensor's data in host memory (GPU tensors are copied; BF16 as uint16 words)."""
    if tensor._array is not None:
        return tensor._array
    device_tensor = tensor._device_tensor.detach().cpu()
    if tensor._triton_dtype == TYPE_BF16:
        return device_tensor.view(_torch().int16).numpy().view(np.uint16)
    return device_tensor.numpy()


def to_runtime_tensor(tensor: Tensor) -> RuntimeTensor:
    """The server-side tensor for a model's output or a BLS input (no copy for host arrays)."""
    array = host_array(tensor)
    if array.dtype.kind == "S":
        array = array.astype(np.object_)  # BYTES travel as object arrays of bytes
    return RuntimeTensor(
        tensor._name, TRITON_DTYPE_TO_DATATYPE[tensor._triton_dtype], array.shape, array
    )


def from_runtime_tensor(tensor: RuntimeTensor) -> Tensor:
    """Wrap a server-side tensor for the model (no copy)."""
    array = tensor.data
    if array is None:
        raise TritonModelException(f"tensor '{tensor.name}' has no data in host memory")
    if array.shape != tensor.shape:
        array = array.reshape(tensor.shape)
    return Tensor._wrap(tensor.name, array, DATATYPE_TO_TRITON_DTYPE[tensor.datatype])


def _torch() -> Any:
    torch = sys.modules.get("torch")
    if torch is not None:
        return torch
    try:
        import torch
    except ImportError:
        raise TritonModelException(
            "this DLPack tensor lives on a GPU (or is bfloat16); carrying it needs torch installed"
        ) from None
    return torch


class _CapsuleProducer:
    """Lets numpy consume a bare DLPack capsule, which it only accepts through `__dlpack__`."""

    def __init__(self, capsule: Any, device: tuple[int, int]) -> None:
        self._capsule = capsule
        self._device = device

    def __dlpack__(self, stream: Any = None, **_: Any) -> Any:
        return self._capsule

    def __dlpack_device__(self) -> tuple[int, int]:
        return self._device


_get_pointer = ctypes.pythonapi.PyCapsule_GetPointer
_get_pointer.restype = ctypes.c_void_p
_get_pointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
_get_name = ctypes.pythonapi.PyCapsule_GetName
_get_name.restype = ctypes.c_char_p
_get_name.argtypes = [ctypes.py_object]


def _capsule_info(capsule: Any) -> tuple[int, int, bool]:
    """(device type, device id, is bfloat16) read from a capsule's DLManagedTensor, so that a
    GPU capsule is never handed to numpy."""
    if type(capsule).__name__ != "PyCapsule":
        raise TritonModelException(
            f"from_dlpack expects a DLPack capsule or an object with __dlpack__, got "
            f"{type(capsule).__name__}"
        )
    name = _get_name(capsule)
    # DLManagedTensorVersioned puts version, manager_ctx, deleter and flags before DLTensor.
    offset = {b"dltensor": 0, b"dltensor_versioned": 32}.get(name)
    if offset is None:
        raise TritonModelException(
            f"this DLPack capsule was already consumed or is not a tensor (name {name!r})"
        )
    base = _get_pointer(capsule, name)
    # DLTensor: void* data; int32 device_type; int32 device_id; int32 ndim; uint8 dtype code...
    device_type = ctypes.c_int32.from_address(base + offset + 8).value
    device_id = ctypes.c_int32.from_address(base + offset + 12).value
    dtype_code = ctypes.c_uint8.from_address(base + offset + 20).value
    return device_type, device_id, dtype_code == _DL_BFLOAT
