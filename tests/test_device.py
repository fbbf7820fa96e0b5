"""The device switch: the one place that picks cuda or cpu, autocast dtype and FAISS GPU."""

from __future__ import annotations

import contextlib
import warnings

import faiss
import pytest
import torch

from curation.device import CPU, Device, faiss_gpu_count, resolve
from curation.errors import CurationError


@pytest.fixture
def fake_gpus(monkeypatch):
    """Make torch (and optionally faiss) report GPUs, without one."""

    def install(count: int = 1, bf16: bool = True, faiss_gpus: int = 0):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
        if faiss_gpus:
            monkeypatch.setattr(faiss, "StandardGpuResources", object, raising=False)
            monkeypatch.setattr(faiss, "get_num_gpus", lambda: faiss_gpus, raising=False)

    return install


def test_cpu_has_no_autocast_and_no_faiss_gpu():
    device = resolve("cpu")
    assert device == CPU
    assert device.torch_device == torch.device("cpu")
    assert device.dtype is None and not device.faiss_gpu
    assert isinstance(device.autocast(), contextlib.nullcontext)


def test_auto_without_cuda_is_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve("auto") == CPU
    assert resolve(None) == CPU


def test_auto_with_cuda_picks_gpu_and_bf16(fake_gpus):
    fake_gpus(count=1, bf16=True)
    device = resolve("auto")
    assert device.kind == "cuda" and device.index == 0
    assert device.torch_device == torch.device("cuda:0")
    assert device.dtype == torch.bfloat16


def test_fp16_when_the_gpu_lacks_bf16(fake_gpus):
    fake_gpus(count=2, bf16=False)
    device = resolve("cuda:1")
    assert device.index == 1 and device.dtype == torch.float16


def test_faiss_gpu_only_with_a_gpu_build(fake_gpus, monkeypatch):
    fake_gpus(count=2)
    if hasattr(faiss, "StandardGpuResources"):
        monkeypatch.delattr(faiss, "StandardGpuResources")
    assert faiss_gpu_count() == 0  # a CPU build of faiss, whatever torch says
    assert not resolve("cuda").faiss_gpu


def test_faiss_gpu_follows_faiss_gpu_count(fake_gpus):
    fake_gpus(count=2, faiss_gpus=1)
    assert resolve("cuda:0").faiss_gpu
    assert not resolve("cuda:1").faiss_gpu  # faiss sees one GPU only


def test_autocast_on_cuda_uses_the_device_dtype():
    device = Device("cuda", 0, "float16", faiss_gpu=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns that CUDA is absent here
        context = device.autocast()
    assert isinstance(context, torch.autocast)
    assert context.device == "cuda" and context.fast_dtype == torch.float16


@pytest.mark.parametrize("spec", ["tpu", "cuda:x", "gpu0", "cuda:-1"])
def test_unknown_specs_are_refused(spec):
    with pytest.raises(CurationError, match="unknown device"):
        resolve(spec)


def test_cuda_asked_for_but_absent(monkeypatch, fake_gpus):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(CurationError, match="no CUDA GPU"):
        resolve("cuda")
    fake_gpus(count=1)
    with pytest.raises(CurationError, match="only 1 CUDA GPU"):
        resolve("cuda:3")


def test_a_device_passes_through():
    device = Device("cuda", 2, "bfloat16", True)
    assert resolve(device) is device


def test_bad_device_fields_are_refused():
    with pytest.raises(ValueError):
        Device("mps")
    with pytest.raises(ValueError):
        Device("cuda", 0, "int8")
