"""Self-labelling as the authors run it: train-mode pseudo-labels and the EMA written back into the network."""

import copy

import pytest
import torch
from torch import nn

from scanlearn.config import Config, with_values
from scanlearn.models import ClusteringModel
from scanlearn.engine.splits import DataSpec
from scanlearn.stages.selflabel import SelfLabelModule, WrittenBackEMA

SPEC = DataSpec(num_classes=3, channels=1, image_size=4, mean=(0.5,), std=(0.25,))


def batch_norm_model() -> ClusteringModel:
    """Flatten, batch norm, 3 clusters: predictions depend on which batch-norm statistics are used."""
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Flatten(), nn.BatchNorm1d(16))
    backbone[1].running_mean.fill_(0.3)
    return ClusteringModel(backbone, 16, 3, 1)


def module_with(mode: str) -> SelfLabelModule:
    config = with_values(Config(), {"selflabel.pseudo_label_mode": mode})
    module = SelfLabelModule(batch_norm_model(), config, SPEC)
    module.train()
    return module


def test_train_mode_pseudo_labels_use_batch_statistics_and_update_the_running_ones():
    module = module_with("train")
    weak = torch.randn(8, 1, 4, 4) * 2 + 1
    reference = copy.deepcopy(module.model).train()
    expected = reference(weak)[0]
    logits = module.pseudo_label_logits(weak)
    torch.testing.assert_close(logits, expected)
    batch_norm = module.model.backbone[1]
    torch.testing.assert_close(batch_norm.running_mean, reference.backbone[1].running_mean)
    assert not torch.allclose(batch_norm.running_mean, torch.full((16,), 0.3))
    assert module.model.training and not logits.requires_grad


def test_eval_mode_pseudo_labels_use_the_running_statistics_and_leave_them_alone():
    module = module_with("eval")
    weak = torch.randn(8, 1, 4, 4) * 2 + 1
    expected = copy.deepcopy(module.model).eval()(weak)[0]
    torch.testing.assert_close(module.pseudo_label_logits(weak), expected)
    torch.testing.assert_close(module.model.backbone[1].running_mean, torch.full((16,), 0.3))
    assert module.model.training


def test_written_back_ema_averages_parameters_and_restores_the_starting_buffers():
    network = nn.BatchNorm1d(2)
    ema = WrittenBackEMA(0.9)
    ema.start(network)
    with torch.no_grad():
        network.weight.copy_(torch.tensor([3.0, -1.0]))  # weights after an optimiser step (start: 1, 1)
        network.running_mean.fill_(5.0)  # statistics gathered by the step's forward passes
    ema.update(network)
    torch.testing.assert_close(network.weight.detach(), torch.tensor([0.9 + 0.3, 0.9 - 0.1]))
    torch.testing.assert_close(network.running_mean, torch.zeros(2))
    with torch.no_grad():
        network.weight.copy_(torch.tensor([1.2, 0.8]) + 1.0)
    ema.update(network)
    torch.testing.assert_close(network.weight.detach(), torch.tensor([1.2, 0.8]) + 0.1)


@pytest.mark.parametrize(("write_back", "kind"), [(True, WrittenBackEMA), (False, torch.optim.swa_utils.AveragedModel)])
def test_ema_write_back_option_picks_the_average(write_back, kind):
    config = with_values(Config(), {"selflabel.ema": 0.999, "selflabel.ema_write_back": write_back})
    module = SelfLabelModule(batch_norm_model(), config, SPEC)
    assert isinstance(module.ema, kind)
    assert (module.final_model() is module.model) == write_back
