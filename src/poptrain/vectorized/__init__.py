"""Train a whole population as one batched PyTorch program (``executor="vectorized"``).

spec = poptrain.VectorizedTrainable(
    model=lambda: nn.Sequential(nn.Linear(64, 128), nn.ReLU(), poptrain.vectorized.Dropout(), nn.Linear(128, 10)),
    data=(x_train, y_train), loss=nn.functional.cross_entropy,
    evaluate=lambda predict: {"val_acc": (predict(x_val).argmax(-1) == y_val).float().mean(-1)},
    optimizer=poptrain.vectorized.SGD(momentum=0.9),
)
run.optimize(spec, steps=30, executor="vectorized")
"""

from poptrain.checkpoints.population import member_from_checkpoint
from poptrain.vectorized.memory import MemoryPlan, plan_memory
from poptrain.vectorized.model import Dropout, StackedModel
from poptrain.vectorized.optim import SGD, Adam, AdamW, VectorizedOptimizer
from poptrain.vectorized.population import Population
from poptrain.vectorized.trainable import MemberTrainable, VectorizedTrainable

__all__ = [
    "SGD",
    "Adam",
    "AdamW",
    "Dropout",
    "MemberTrainable",
    "MemoryPlan",
    "Population",
    "StackedModel",
    "VectorizedOptimizer",
    "VectorizedTrainable",
    "member_from_checkpoint",
    "plan_memory",
]
