"""The one place that decides where tensor and FAISS work runs.

`resolve("auto" | "cpu" | "cuda" | "cuda:N")` returns a frozen `Device`: the
torch device, the autocast dtype (bfloat16 where the GPU supports it, else
float16; none on CPU) and whether FAISS GPU indexes can be used (only GPU
builds of faiss have `StandardGpuResources`). Library code takes a `Device`
argument and never checks hardware itself.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from curation.errors import CurationError

if TYPE_CHECKING:
    import torch

_DTYPES = ("bfloat16", "float16")  # torch is imported where a tensor needs it: it takes seconds


@dataclass(frozen=True)
class Device:
    """Where work runs. `kind` is "cpu" or "cuda"; `index` is the GPU number."""

    kind: str = "cpu"
    index: int = 0
    autocast_dtype: str | None = None  # "bfloat16", "float16" or None
    faiss_gpu: bool = False

    def __post_init__(self) -> None:
        if self.kind not in ("cpu", "cuda"):
            raise ValueError(f"device kind must be 'cpu' or 'cuda', got {self.kind!r}")
        if self.autocast_dtype not in (None, *_DTYPES):
            raise ValueError(f"autocast_dtype must be one of {sorted(_DTYPES)} or None")

    @property
    def is_cuda(self) -> bool:
        return self.kind == "cuda"

    @property
    def torch_device(self) -> torch.device:
        import torch

        return torch.device(f"cuda:{self.index}") if self.is_cuda else torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype | None:
        import torch

        return getattr(torch, self.autocast_dtype) if self.autocast_dtype else None

    def autocast(self) -> contextlib.AbstractContextManager:
        """Mixed precision on CUDA; a no-op context on CPU."""
        if self.is_cuda and self.dtype is not None:
            import torch

            return torch.autocast(device_type="cuda", dtype=self.dtype)
        return contextlib.nullcontext()

    def describe(self) -> str:
        if not self.is_cuda:
            return "cpu"
        faiss_where = "gpu" if self.faiss_gpu else "cpu"
        return f"cuda:{self.index} ({self.autocast_dtype or 'float32'}, faiss {faiss_where})"


CPU = Device()


def resolve(spec: str | Device | None = "auto") -> Device:
    """Turn a user's device string into a `Device`; a `Device` passes through."""
    if isinstance(spec, Device):
        return spec
    text = (spec or "auto").strip().lower()
    if text == "cpu":
        return CPU
    import torch

    if text == "auto":
        return _cuda(0) if torch.cuda.is_available() else CPU
    if text == "cuda" or text.startswith("cuda:"):
        index = _parse_index(text)
        if not torch.cuda.is_available():
            raise CurationError(f"device {spec!r} asked for, but torch sees no CUDA GPU")
        count = torch.cuda.device_count()
        if index >= count:
            raise CurationError(f"device {spec!r} asked for, but only {count} CUDA GPU(s) exist")
        return _cuda(index)
    raise CurationError(f"unknown device {spec!r}: use auto, cpu, cuda or cuda:N")


def part_device(device: Device, engine_gpus: int, distributed: bool) -> tuple[Device, int]:
    """Where a part's tensors go, and the GPUs it asks the engine for: the GPU
    the engine gives it (a Ray worker sees just that one, as cuda:0); `device`
    itself on an engine that runs parts on this machine; else the CPU."""
    if device.is_cuda and engine_gpus > 0:
        return replace(device, index=0), 1
    return (CPU if distributed else device), 0


def _parse_index(text: str) -> int:
    if text == "cuda":
        return 0
    number = text.partition(":")[2]
    if not number.isdigit():
        raise CurationError(f"unknown device {text!r}: the GPU number must be a whole number")
    return int(number)


def _cuda(index: int) -> Device:
    import torch

    dtype = "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    return Device("cuda", index, dtype, faiss_gpu=faiss_gpu_count() > index)


def faiss_gpu_count() -> int:
    """GPUs FAISS can use: zero for CPU builds, which lack the GPU classes."""
    import faiss

    if not hasattr(faiss, "StandardGpuResources") or not hasattr(faiss, "get_num_gpus"):
        return 0
    return int(faiss.get_num_gpus())
