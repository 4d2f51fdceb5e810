"""Device and precision choices on the CUDA path, as far as a machine without a GPU can check them: torch.cuda is
made to look present (and bf16-capable or not) where a test needs it."""

from __future__ import annotations

import pytest
import torch

from birder_index.backbone import hardware
from birder_index.backbone.hardware import autocast_dtype
from birder_index.backbone.hardware import fast_bf16
from birder_index.backbone.hardware import resolve_device
from birder_index.errors import BirderIndexError

CUDA = torch.device("cuda")


def _pretend_cuda(monkeypatch: pytest.MonkeyPatch, present: bool, gpus: int = 1, bf16: bool = True) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: present)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus if present else 0)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)


@pytest.mark.parametrize("name", [None, "", "auto"])
def test_auto_picks_the_cpu_without_cuda_and_cuda_with_it(monkeypatch: pytest.MonkeyPatch, name: str | None) -> None:
    _pretend_cuda(monkeypatch, present=False)
    assert resolve_device(name) == torch.device("cpu")
    _pretend_cuda(monkeypatch, present=True)
    assert resolve_device(name) == CUDA


@pytest.mark.parametrize("name", ["cuda", "cuda:0"])
def test_cuda_without_cuda_is_a_one_line_error(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    _pretend_cuda(monkeypatch, present=False)
    with pytest.raises(BirderIndexError) as err:
        resolve_device(name)
    assert str(err.value) == f"--device {name}: CUDA is not available on this machine"


def test_cuda_with_cuda_is_taken_as_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    _pretend_cuda(monkeypatch, present=True, gpus=2)
    assert resolve_device("cuda") == CUDA
    assert resolve_device("cuda:1") == torch.device("cuda", 1)


@pytest.mark.parametrize(
    "gpus,name,message",
    [
        (1, "cuda:7", "--device cuda:7: this machine has 1 CUDA device (cuda:0)"),
        (2, "cuda:2", "--device cuda:2: this machine has 2 CUDA devices (cuda:0 to cuda:1)"),
    ],
)
def test_a_gpu_the_machine_lacks_is_a_one_line_error(
    monkeypatch: pytest.MonkeyPatch, gpus: int, name: str, message: str
) -> None:
    # torch.device("cuda:7") is valid anywhere; without this check the model's .to() failed with a traceback
    _pretend_cuda(monkeypatch, present=True, gpus=gpus)
    with pytest.raises(BirderIndexError) as err:
        resolve_device(name)
    assert str(err.value) == message


@pytest.mark.parametrize("name", ["gpu", "cuda:x", "tpu0", "cuda:-1"])
def test_a_name_torch_does_not_know_is_an_error(name: str) -> None:
    with pytest.raises(BirderIndexError, match="is not a torch device") as err:
        resolve_device(name)
    assert "\n" not in str(err.value)


def test_mps_without_mps_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(BirderIndexError, match="MPS is not available"):
        resolve_device("mps")


def test_auto_precision_on_cuda_follows_the_gpus_bf16_support(monkeypatch: pytest.MonkeyPatch) -> None:
    _pretend_cuda(monkeypatch, present=True, bf16=True)
    assert fast_bf16(CUDA)
    assert autocast_dtype(CUDA, "auto") is torch.bfloat16
    _pretend_cuda(monkeypatch, present=True, bf16=False)  # a pre-Ampere GPU: bf16 emulated, slower than float32
    assert not fast_bf16(CUDA)
    assert autocast_dtype(CUDA, "auto") is None


def test_explicit_precisions_do_not_depend_on_the_hardware(monkeypatch: pytest.MonkeyPatch) -> None:
    _pretend_cuda(monkeypatch, present=True, bf16=False)
    assert autocast_dtype(CUDA, "bf16") is torch.bfloat16
    _pretend_cuda(monkeypatch, present=True, bf16=True)
    assert autocast_dtype(CUDA, "float32") is None
    with pytest.raises(BirderIndexError, match="--precision must be auto, bf16 or float32, got 'fp16'"):
        autocast_dtype(CUDA, "fp16")


@pytest.mark.parametrize(
    "flags,native", [({"avx2", "fma"}, False), ({"avx512f", "avx512_bf16"}, True), ({"amx_bf16"}, True)]
)
def test_auto_precision_on_a_cpu_follows_its_flags(
    monkeypatch: pytest.MonkeyPatch, flags: set[str], native: bool
) -> None:
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset(flags))
    cpu = torch.device("cpu")
    assert fast_bf16(cpu) is native
    assert autocast_dtype(cpu, "auto") is (torch.bfloat16 if native else None)


def test_other_devices_run_float32_by_default() -> None:
    assert not fast_bf16(torch.device("mps"))
    assert autocast_dtype(torch.device("mps"), "auto") is None
