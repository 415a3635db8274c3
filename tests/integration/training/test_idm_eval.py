"""IDM prediction-error evaluation: baselines and the unconstrained upper bound."""

import pytest
import torch

from tests.conftest import tiny_config_dict
from training.config import config_from_dict
from training.evaluation.leak import idm_prediction_error
from training.models import LatentActionModel


def tiny(**overrides: object) -> LatentActionModel:
    torch.manual_seed(0)
    return LatentActionModel(config_from_dict(tiny_config_dict("unused", ["unused"], **overrides)).model).eval()


def test_idm_eval_reports_zero_shuffled_and_unconstrained() -> None:
    model, free = tiny(), tiny(**{"model.regularizer.kind": "none"})
    result = idm_prediction_error(model, clips_per_file=2, unconstrained=free, generated_clips=8)
    assert "unconstrained_l1" in result["rows"][0]  # the generated clips' row too
    mean = result["rows"][-1]
    assert {"idm_l1", "zero_l1", "shuffled_l1", "unconstrained_l1"} <= set(mean)
    assert mean["reduction"] == pytest.approx(1 - mean["idm_l1"] / mean["zero_l1"])


def test_unconstrained_baseline_must_share_the_encoder() -> None:
    with pytest.raises(ValueError, match="share the model's encoder"):
        idm_prediction_error(tiny(), unconstrained=tiny(**{"model.encoder.dim": 16}))
