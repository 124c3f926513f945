"""Augmented PBT: the network's hidden-layer widths searched with its hyperparameters.

model=lambda: poptrain.apbt.masked_mlp(4, 3, max_width=10)      # widths set by space["widths"]
space={"widths": poptrain.Widths(1, 10), "lr": ..., "momentum": ...}
score=poptrain.apbt.size_fitness("val_acc")                    # 1.09^(100 acc) / 1.02^weights
"""

from poptrain.apbt.fitness import size_fitness
from poptrain.apbt.topology import MaskedLayer, ModelView, Topology, UnitMask, masked_layers, masked_mlp, model_view

__all__ = [
    "MaskedLayer",
    "ModelView",
    "Topology",
    "UnitMask",
    "masked_layers",
    "masked_mlp",
    "model_view",
    "size_fitness",
]
