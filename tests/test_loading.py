"""tapweight.job.loading: strict, logged loads; foreign messages made plain; numpy scalars."""

import logging

import numpy as np
import pytest
import torch

from tapweight import TapweightError, load_backbone, read_weights
from tapweight.job.loading import names, plain
from tests.toy_plugin import Backbone


def test_plain_drops_terminal_codes_and_newlines():
    torch_text = ("Weights only load failed. \x1b[1mdo those steps only if you trust the source\x1b[0m."
                  "\n\tWeightsUnpickler error: \x1b[31mUnsupported\x1b[0m")
    assert plain(torch_text) == ("Weights only load failed. do those steps only if you trust the source. "
                                 "WeightsUnpickler error: Unsupported")
    assert names([f"k{i}" for i in range(10)], shown=3) == "k0, k1, k2, ... (10 in all)"


def test_partial_loads_need_strict_off_and_are_logged(tmp_path, caplog):
    torch.manual_seed(0)
    trained = Backbone(8, 16)
    state = trained.state_dict()
    dropped = next(iter(state))
    torch.save({k: v for k, v in state.items() if k != dropped} | {"extra.bias": torch.ones(2)},
               tmp_path / "partial.pt")
    with pytest.raises(TapweightError, match=f"1 tensors missing {dropped}; pass .* or --set toy.strict_load=false"):
        load_backbone(Backbone(8, 16), str(tmp_path / "partial.pt"), option="toy.strict_load")
    torch.manual_seed(1)
    model = Backbone(8, 16)
    before = model.state_dict()[dropped].clone()
    with caplog.at_level(logging.INFO):
        load_backbone(model, str(tmp_path / "partial.pt"), strict=False, option="toy.strict_load")
    assert torch.equal(model.state_dict()[dropped], before)  # kept its initialisation
    for name, value in state.items():
        if name != dropped:
            assert torch.equal(model.state_dict()[name], value), name
    loaded, unused, warning = (r.getMessage() for r in caplog.records)
    assert f"(torch zip file, plain state dict): {len(state) - 1} tensors, 1 missing, 0 of another shape, " \
           "1 not used" in loaded
    assert unused.endswith("extra.bias") and warning.endswith(f"(toy.strict_load=false): {dropped}")


def test_numpy_scalars_load_as_numpy_1_pickled_them(tmp_path):
    path = tmp_path / "metrics.pth"
    torch.save({"w": torch.ones(2), "auc": np.float64(0.75), "n": np.int64(3)}, path,
               _use_new_zipfile_serialization=False)
    data = path.read_bytes()
    assert b"numpy._core.multiarray\nscalar" in data
    path.write_bytes(data.replace(b"numpy._core.multiarray\nscalar", b"numpy.core.multiarray\nscalar"))
    state = read_weights(str(path))
    assert state["auc"] == np.float64(0.75) and state["n"] == 3 and torch.equal(state["w"], torch.ones(2))


def test_other_python_objects_are_refused_in_one_line(tmp_path):
    path = tmp_path / "arrays.pt"
    torch.save({"w": torch.ones(2), "history": np.zeros(3)}, path)
    with pytest.raises(TapweightError, match=r"holds Python objects besides tensors \(numpy") as err:
        read_weights(str(path))
    assert "\n" not in str(err.value) and "\x1b" not in str(err.value)
