"""Offline mimics of ImageMol's checkpoints (HongxinXiang/ImageMol), made the way its code
makes them: the model layout of ``model/model.py`` (``ImageMol``) and ``finetune.py``'s
torchvision ResNet18, saved like ``pretrain.py`` (``{"arch", "state_dict"}``) and
``save_finetune_ckpt`` (``model_state_dict`` plus numpy metrics), in the pre-zip format of
the torch 1.4 and numpy 1.x it used. Cluster heads are smaller than ImageMol's 100/1000/10000
classes to keep the files small; the jigsaw head has ImageMol's 101."""

import collections
from pathlib import Path

import numpy as np
import torch
import torchvision
from torch import nn


class ImageMol(nn.Module):
    """ImageMol's pretraining network (model/model.py), layout and names."""

    def __init__(self, jigsaw_classes=101, label1_classes=10, label2_classes=20, label3_classes=30):
        super().__init__()
        resnet = torchvision.models.resnet18()
        resnet.fc = nn.Linear(512, 2)  # load_model(num_classes=2), then dropped
        self.embedding_layer = nn.Sequential(*list(resnet.children())[:-1])
        self.bn = nn.BatchNorm1d(512)
        self.jigsaw_classifier = nn.Linear(512, jigsaw_classes)
        self.class_classifier1 = nn.Linear(512, label1_classes)
        self.class_classifier2 = nn.Linear(512, label2_classes)
        self.class_classifier3 = nn.Linear(512, label3_classes)


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-default values in every floating tensor (batch-norm statistics included)."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point():
                tensor.copy_(torch.rand_like(tensor) + 0.5 if "running_var" in name
                             else torch.randn_like(tensor) * 0.05)
    return model


def numpy1(path: Path) -> None:
    """Rewrite a pre-zip file's numpy scalars as numpy 1.x pickled them (``numpy.core``)."""
    data = path.read_bytes()
    path.write_bytes(data.replace(b"numpy._core.multiarray\nscalar", b"numpy.core.multiarray\nscalar"))


def save_release(model: ImageMol, path: Path, data_parallel: bool) -> None:
    """pretrain.py's save, ``{"arch", "state_dict"}``; ``data_parallel``: the state dict of
    the DataParallel-wrapped model, whose keys carry ``module.``."""
    state = (nn.DataParallel(model) if data_parallel else model).state_dict()
    torch.save({"arch": "ResNet18", "state_dict": state}, path, _use_new_zipfile_serialization=False)


def finetuned_model(num_tasks: int) -> nn.Module:
    """finetune.py's network: torchvision's ResNet18 with an fc of one output per task."""
    model = torchvision.models.resnet18()
    model.fc = nn.Linear(512, num_tasks)
    return randomize(model, seed=1)


def save_finetuned(model: nn.Module, path: Path, data_parallel: bool) -> None:
    """save_finetune_ckpt after one SGD step, with finetune.py's ``results`` dict: numpy
    float64 metrics, and for several tasks metric_multitask's defaultdict."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-5)
    model(torch.rand(2, 3, 32, 32)).sum().backward()
    optimizer.step()
    auc = np.float64(0.8125)
    desc = {"ROCAUC": auc}
    if model.fc.out_features > 1:  # metric_multitask
        desc = collections.defaultdict(float, ROCAUC=auc)
        desc["result_list_dict_each_task"] = [{"ROCAUC": auc}] * model.fc.out_features
    results = {"highest_valid": auc, "final_train": auc, "final_test": auc, "highest_train": auc,
               "highest_valid_desc": desc, "final_train_desc": desc, "final_test_desc": desc}
    net = nn.DataParallel(model) if data_parallel else model
    state = {"epoch": 7, "model_state_dict": {k: v.cpu() for k, v in net.state_dict().items()},
             "optimizer_state_dict": optimizer.state_dict(), "lr_scheduler": None,
             "loss": round(0.43219, 4), "result_dict": results}
    torch.save(state, path, _use_new_zipfile_serialization=False)
    numpy1(path)
