"""Device, precision and memory layout: decided in one place from what the hardware runs safely and fast.

bf16 autocast and channels_last pay off where bf16 is native: CUDA, and CPUs with AVX-512 BF16 or AMX
(about 3x faster there). On other CPUs (AVX2, most laptops) bf16 is emulated and slower, so they run fp32,
in NCHW by default: channels_last in fp32 measured 0.98x for the Fashion-MNIST preset's model and 1.28x for
a width-64 ResNet-18 on AVX2 (BENCHMARKS.md), so it is left to ``--set runtime.channels_last=true``. torch 2.14.1's oneDNN also hangs (AVX2) or crashes (AVX-512) in the
backward pass of narrow 1x1 stride-2 convolutions in channels_last, so on a CPU those layers always
run in NCHW, whatever the settings ask, while the rest of the model may run channels_last.
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import ContextManager

import torch
from torch import nn

from ..config import RuntimeConfig

log = logging.getLogger(__name__)

# oneDNN ISA caps (ONEDNN_MAX_CPU_ISA) that still allow its native bf16 kernels; any lower cap emulates bf16.
BF16_ISA_CAPS = frozenset({
    "AVX512_CORE_BF16", "AVX512_CORE_FP16", "AVX512_CORE_AMX", "AVX512_CORE_AMX_FP16",
    "AVX10_1_512", "AVX10_1_512_AMX", "AVX10_1_512_AMX_FP16", "AVX10_2_512", "AVX10_2_512_AMX_2", "ALL", "DEFAULT",
})
# 1x1 stride-2 convolutions with at most this many input channels hang or crash oneDNN's channels_last backward
# on CPU (hangs for 2-6 channels on AVX2, crashes for 8 or fewer on AVX-512; benchmarks/cpu_guard_probe.py).
NARROW_CONV_CHANNELS = 16


@dataclass(frozen=True)
class ExecutionPlan:
    """How one stage runs its network: on ``device``, at Lightning ``precision``, in which memory layout."""

    device: torch.device
    hardware: str
    precision: str
    channels_last: bool
    nchw_layers: int = 0

    @property
    def autocast_bf16(self) -> bool:
        """Whether forward passes run under bf16 autocast."""
        return self.precision.startswith("bf16")

    def describe(self) -> str:
        """One line for the log, e.g. ``CPU AVX2, no native bf16: fp32, NCHW``."""
        precision = "bf16 autocast" if self.autocast_bf16 else {"32-true": "fp32"}.get(self.precision, self.precision)
        layout = "channels_last" if self.channels_last else "NCHW"
        if self.channels_last and self.nchw_layers:
            layout += f" ({self.nchw_layers} narrow 1x1 stride-2 convolutions kept NCHW: oneDNN hangs on them)"
        return f"{self.hardware}: {precision}, {layout}"

    def apply(self, module: nn.Module) -> nn.Module:
        """``module`` in this plan's layout. Inputs need no conversion: a convolution runs channels_last when
        its weight or its input is channels_last, so the layers themselves carry the decision."""
        if not self.channels_last:
            return module.to(memory_format=torch.contiguous_format)
        module = module.to(memory_format=torch.channels_last)
        if self.device.type == "cpu":
            for conv in narrow_strided_convs(module):
                keep_nchw(conv)
        return module

    def autocast(self) -> ContextManager:
        """Autocast for inference matching the training precision."""
        if not self.autocast_bf16:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)


def best_device(runtime: RuntimeConfig | None = None) -> torch.device:
    """CUDA when present (and not turned off by ``runtime.accelerator=cpu``), else CPU."""
    wants_cpu = runtime is not None and runtime.accelerator == "cpu"
    return torch.device("cuda" if torch.cuda.is_available() and not wants_cpu else "cpu")


def onednn_isa_cap() -> str:
    """The ISA cap set with ONEDNN_MAX_CPU_ISA (upper case), or ``DEFAULT``."""
    return os.environ.get("ONEDNN_MAX_CPU_ISA", "DEFAULT").strip().upper() or "DEFAULT"


def onednn_reports_bf16() -> bool:
    """What oneDNN says of this CPU's bf16 support (it does not look at ONEDNN_MAX_CPU_ISA)."""
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


def cpu_flags(info: Path = Path("/proc/cpuinfo")) -> frozenset[str] | None:
    """The ISA flags /proc/cpuinfo lists for this CPU, or None where there is no such file."""
    if not info.is_file():
        return None
    lines = [line for line in info.read_text().splitlines() if line.startswith("flags")]
    return frozenset(lines[0].split(":", 1)[1].split()) if lines else None


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (AVX-512 BF16 or AMX) and oneDNN is allowed to use it.

    oneDNN also reports bf16 on AVX-512 CPUs without AVX-512 BF16 (Skylake-X, Ice Lake), where it emulates it:
    there bf16 autocast measured 1.3-2.6x slower than fp32 (docs/tuning-log.md), so the CPU's flags must list it."""
    flags = cpu_flags()
    listed = flags is None or bool(flags & NATIVE_BF16_FLAGS)
    return onednn_isa_cap() in BF16_ISA_CAPS and onednn_reports_bf16() and listed


def native_bf16(device: torch.device) -> bool:
    """Whether bf16 runs natively (fast) on ``device``."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return cpu_has_native_bf16()


def describe_hardware(device: torch.device) -> str:
    """``CPU AVX2, no native bf16`` / ``CPU AVX512, native bf16`` / ``CUDA <name>``."""
    if device.type == "cuda":
        return f"CUDA {torch.cuda.get_device_name(device)}"
    cap = onednn_isa_cap()
    capped = f" (oneDNN capped at {cap})" if cap != "DEFAULT" else ""
    bf16 = "native" if cpu_has_native_bf16() else "no native"
    return f"CPU {torch.backends.cpu.get_cpu_capability()}{capped}, {bf16} bf16"


ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16")


def cpu_identity() -> dict[str, str]:
    """The CPU model, its ISA flags that decide the fast path, and what this process uses: recorded next to
    every benchmark figure."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
    fields = {key.strip(): value.strip() for key, value in fields.items()}
    flags = cpu_flags() or frozenset()
    return {
        "cpu": fields.get("model name", platform.processor() or platform.machine()),
        "isa_flags": " ".join(flag for flag in ISA_FLAGS if flag in flags) or "unknown",
        "decision": describe_hardware(torch.device("cpu")),
    }


def resolve_precision(runtime: RuntimeConfig) -> str:
    """Lightning precision string; ``auto`` picks bf16-mixed where bf16 is native, else fp32."""
    if runtime.precision != "auto":
        return runtime.precision
    return "bf16-mixed" if native_bf16(best_device(runtime)) else "32-true"


def wants_channels_last(runtime: RuntimeConfig, device: torch.device, precision: str) -> bool:
    """``runtime.channels_last``, where ``auto`` means: on CUDA, and with bf16 on a CPU that has it natively
    (in fp32 on a CPU it is not reliably faster, and it exposes more of oneDNN's narrow-layer bugs)."""
    if runtime.channels_last != "auto":
        return bool(runtime.channels_last)
    return device.type == "cuda" or (precision.startswith("bf16") and native_bf16(device))


def narrow_strided_convs(module: nn.Module) -> list[nn.Conv2d]:
    """The 1x1 stride-2+ convolutions of ``module`` narrow enough to hang oneDNN's channels_last backward."""
    return [
        m for m in module.modules()
        if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) and max(m.stride) > 1
        and m.in_channels <= NARROW_CONV_CHANNELS
    ]


def _contiguous_input(_: nn.Module, args: tuple) -> tuple:
    return tuple(a.contiguous() if isinstance(a, torch.Tensor) else a for a in args)


_KEPT_NCHW: weakref.WeakSet[nn.Conv2d] = weakref.WeakSet()


def keep_nchw(conv: nn.Conv2d) -> None:
    """Run ``conv`` in NCHW inside a channels_last model: contiguous weight, inputs made contiguous."""
    conv.weight.data = conv.weight.data.clone(memory_format=torch.contiguous_format)  # 1x1 weights look contiguous either way
    if conv not in _KEPT_NCHW:
        conv.register_forward_pre_hook(_contiguous_input)
        _KEPT_NCHW.add(conv)


def plan_execution(runtime: RuntimeConfig, module: nn.Module | None = None) -> ExecutionPlan:
    """The device, precision and layout ``module`` runs with under ``runtime``."""
    device = best_device(runtime)
    precision = resolve_precision(runtime)
    channels_last = wants_channels_last(runtime, device, precision)
    narrow = len(narrow_strided_convs(module)) if module is not None and channels_last and device.type == "cpu" else 0
    return ExecutionPlan(device, describe_hardware(device), precision, channels_last, narrow)


def prepare(module: nn.Module, runtime: RuntimeConfig, stage: str) -> nn.Module:
    """Put ``module`` in the layout its plan chooses and log the decision once for ``stage``."""
    plan = plan_execution(runtime, module)
    log.info("%s: %s", stage, plan.describe())
    return plan.apply(module)
