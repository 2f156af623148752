"""Models the seed trains, as plain ``torch.nn.Module`` builders."""

from epochlab.models.mlp import mlp

__all__ = ["mlp"]
