"""The one place that decides device, precision and memory layout (scanlearn.engine.execution)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

from scanlearn.engine import execution
from scanlearn.config import RuntimeConfig
from scanlearn.models import build_backbone


@pytest.fixture
def cpu_with_bf16(monkeypatch) -> None:
    """A CPU whose oneDNN reports native bf16 (AVX-512 BF16), with no ISA cap."""
    monkeypatch.setattr(execution, "onednn_reports_bf16", lambda: True)
    monkeypatch.setattr(execution, "cpu_flags", lambda: frozenset({"avx2", "avx512f", "avx512_bf16"}))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)


@pytest.fixture
def cpu_without_bf16(monkeypatch) -> None:
    """An AVX2-only CPU: oneDNN reports no native bf16."""
    monkeypatch.setattr(execution, "onednn_reports_bf16", lambda: False)
    monkeypatch.setattr(execution, "cpu_flags", lambda: frozenset({"avx2", "fma"}))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)


def layouts(module: nn.Module) -> dict[str, bool]:
    """Whether each convolution's weight has channels_last strides, by name (compared stride by stride:
    ``is_contiguous`` cannot tell the two layouts apart for 1x1 kernels or one input channel)."""
    def channels_last(w: torch.Tensor) -> bool:
        return w.stride() == torch.empty(w.shape, memory_format=torch.channels_last).stride()
    return {name: channels_last(m.weight) for name, m in module.named_modules() if isinstance(m, nn.Conv2d)}


def test_cpu_without_native_bf16_runs_fp32_nchw(cpu_without_bf16) -> None:
    plan = execution.plan_execution(RuntimeConfig(), build_backbone("resnet18-cifar", width=32, in_channels=1))
    assert (plan.precision, plan.channels_last, plan.autocast_bf16) == ("32-true", False, False)
    assert plan.describe().endswith(": fp32, NCHW") and "no native bf16" in plan.describe()


def test_cpu_with_native_bf16_runs_bf16_channels_last(cpu_with_bf16) -> None:
    plan = execution.plan_execution(RuntimeConfig(), build_backbone("resnet18-cifar", width=32, in_channels=1))
    assert (plan.precision, plan.channels_last, plan.nchw_layers) == ("bf16-mixed", True, 0)
    assert plan.describe().endswith(": bf16 autocast, channels_last")


def test_avx512_without_bf16_flag_runs_fp32_though_onednn_reports_bf16(cpu_with_bf16, monkeypatch) -> None:
    """Ice Lake / Skylake-X: oneDNN says bf16 (it emulates it), but the CPU lacks avx512_bf16, so fp32 is faster."""
    monkeypatch.setattr(execution, "cpu_flags", lambda: frozenset({"avx2", "avx512f", "avx512_vnni"}))
    plan = execution.plan_execution(RuntimeConfig())
    assert (plan.precision, plan.channels_last, plan.autocast_bf16) == ("32-true", False, False)
    assert "no native bf16" in plan.hardware


def test_cpu_flags_reads_the_first_flags_line(tmp_path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512_bf16\n\nprocessor\t: 1\nflags\t\t: fpu\n")
    assert execution.cpu_flags(info) == frozenset({"fpu", "avx2", "avx512_bf16"})
    assert execution.cpu_flags(tmp_path / "absent") is None


def test_onednn_isa_cap_below_avx512_bf16_turns_native_bf16_off(cpu_with_bf16, monkeypatch) -> None:
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "avx2")
    plan = execution.plan_execution(RuntimeConfig())
    assert (plan.precision, plan.channels_last) == ("32-true", False)
    assert "oneDNN capped at AVX2" in plan.hardware
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_AMX")
    assert execution.plan_execution(RuntimeConfig()).precision == "bf16-mixed"


def test_explicit_settings_win_over_auto(cpu_with_bf16) -> None:
    plan = execution.plan_execution(RuntimeConfig(precision="32-true", channels_last=False))
    assert (plan.precision, plan.channels_last) == ("32-true", False)


@pytest.mark.parametrize("width, narrow", [(1, 3), (4, 3), (8, 2), (16, 1), (32, 0)])
def test_narrow_strided_convs_of_a_resnet_are_its_thin_downsampling_layers(width: int, narrow: int) -> None:
    # downsampling 1x1 stride-2 convolutions read width, 2*width and 4*width channels
    found = execution.narrow_strided_convs(build_backbone("resnet18-cifar", width=width, in_channels=1))
    expected = [c for c in (width, 2 * width, 4 * width) if c <= execution.NARROW_CONV_CHANNELS]
    assert [conv.in_channels for conv in found] == expected and len(found) == narrow


def test_channels_last_keeps_narrow_layers_nchw_on_cpu(cpu_with_bf16) -> None:
    model = build_backbone("resnet18-cifar", width=8, in_channels=1)
    plan = execution.plan_execution(RuntimeConfig(), model)
    model = plan.apply(model)
    kept = {name for name, channels_last in layouts(model).items() if not channels_last}
    assert kept == {"layer2.0.downsample.0", "layer3.0.downsample.0"}
    assert plan.nchw_layers == 2 and "2 narrow 1x1 stride-2 convolutions kept NCHW" in plan.describe()
    x = torch.randn(3, 8, 12, 12).contiguous(memory_format=torch.channels_last)
    assert model.layer2[0].downsample[0](x).is_contiguous()  # the kept layer runs NCHW whatever its input


def test_apply_returns_to_nchw_when_the_plan_says_so(cpu_without_bf16) -> None:
    model = build_backbone("resnet18-cifar", width=32, in_channels=1).to(memory_format=torch.channels_last)
    model = execution.plan_execution(RuntimeConfig(), model).apply(model)
    assert not any(layouts(model).values())


def test_keeping_a_layer_nchw_changes_nothing_numerically() -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 8, 1, stride=2)
    x = torch.randn(2, 4, 10, 10)
    expected = conv(x)
    execution.keep_nchw(conv)
    execution.keep_nchw(conv)  # idempotent: one hook
    torch.testing.assert_close(conv(x.contiguous(memory_format=torch.channels_last)), expected)


ONE_STEP = textwrap.dedent("""
    import torch
    from scanlearn.config import resolve
    from scanlearn.engine.execution import prepare
    from scanlearn.engine.splits import data_spec
    from scanlearn.stages.pretext import build_contrastive_model
    torch.manual_seed(0)
    torch.set_num_threads(2)
    for width in (1, 2, 4):
        for layout in ("auto", "true"):
            config = resolve("fashion-mnist", None, [f"model.width={width}", f"runtime.channels_last={layout}"])
            model = prepare(build_contrastive_model(config, data_spec(config)), config.runtime, "test")
            optimiser = torch.optim.SGD(model.parameters(), lr=0.1)
            for batch in (16, 50, 128):
                model(torch.randn(batch, 1, 28, 28)).sum().backward()
                optimiser.step()
            print("stepped", width, layout, flush=True)
""")


@pytest.mark.timeout(200)
def test_smallest_models_train_without_hanging() -> None:
    """Widths 1, 2 and 4 at 28x28, built and laid out by the library, with channels_last auto and forced on:
    without the guard torch 2.14.1's oneDNN hangs here (AVX2) or crashes (AVX-512) at width 2."""
    done = subprocess.run([sys.executable, "-c", ONE_STEP], capture_output=True, text=True, timeout=150)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split("\n").count("stepped 4 true") == 1 and done.stdout.count("stepped") == 6, done.stdout
