"""Networks of the latent action world model (one concept per file)."""

from training.models.decoder import FrameCausalDecoder
from training.models.encoder import FrameCausalEncoder, TinyEncoder, VJepa2Encoder, build_encoder
from training.models.idm import InverseDynamicsModel
from training.models.lam import LatentActionModel
from training.models.regularizers import (
    NoisyRegularizer,
    Regularizer,
    SparseRegularizer,
    VectorQuantizer,
    build_regularizer,
)
from training.models.world_model import WorldModel, autoregressive_rollout, teacher_forced_loss

__all__ = [
    "FrameCausalDecoder",
    "FrameCausalEncoder",
    "InverseDynamicsModel",
    "LatentActionModel",
    "NoisyRegularizer",
    "Regularizer",
    "SparseRegularizer",
    "TinyEncoder",
    "VJepa2Encoder",
    "VectorQuantizer",
    "WorldModel",
    "build_encoder",
    "build_regularizer",
    "autoregressive_rollout",
    "teacher_forced_loss",
]
