"""A state that safe loading (``torch.load(weights_only=True)``) would refuse is refused when it
is saved, naming the key and the type, and the run stops at once; a checkpoint holding such an
object (or a malicious one) is refused on load without being called corrupt or run."""

from __future__ import annotations

import collections
import dataclasses
import enum
import io
import os
import pickle
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import poptrain
from poptrain import CheckpointError
from poptrain.checkpoints import (
    InMemoryCheckpointStore,
    LocalCheckpointStore,
    check_loadable,
    deserialize,
    serialize,
    sha256,
)
from poptrain.records import CheckpointRecord

FIX = "store tensors, lists or numbers instead (torch.from_numpy(x), x.tolist(), float(x))"
WEIGHTS_ONLY = "which checkpoints cannot hold (they are loaded with torch.load(weights_only=True))"
STEP_CALLS: list[int] = []


class Regression(poptrain.Trainable):
    """The README's Quickstart trainable."""

    def setup(self, hparams: dict, context: poptrain.TrainContext) -> None:
        g = torch.Generator().manual_seed(context.seed)
        self.slot = context.slot
        self.x = torch.randn(32, 4, generator=g)
        self.y = self.x @ torch.ones(4, 1)
        self.model = torch.nn.Linear(4, 1)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=hparams["lr"])

    def step(self) -> None:
        STEP_CALLS.append(self.slot)
        self.opt.zero_grad()
        torch.nn.functional.mse_loss(self.model(self.x), self.y).backward()
        self.opt.step()

    def evaluate(self) -> dict[str, float]:
        with torch.no_grad():
            return {"loss": torch.nn.functional.mse_loss(self.model(self.x), self.y).item()}

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "opt": self.opt.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["opt"])

    def set_hparams(self, hparams: dict) -> None:
        self.opt.param_groups[0]["lr"] = hparams["lr"]


class NumpyRegression(Regression):
    """The Quickstart trainable that also keeps a numpy generator's state in its checkpoint."""

    def setup(self, hparams: dict, context: poptrain.TrainContext) -> None:
        super().setup(hparams, context)
        self.rng = np.random.RandomState(context.seed)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "rng": self.rng.get_state()}  # ('MT19937', ndarray, int, int, float)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.rng.set_state(state["rng"])


NUMPY_ERROR = f"state_dict()['rng'][1] holds a numpy.ndarray, {WEIGHTS_ONLY}; {FIX}"
SPACE = {"lr": poptrain.Float(1e-3, 0.1, log=True)}
READY = 3


def make_run(tmp_path: Path, **options: Any) -> poptrain.Run:
    return poptrain.create_run(
        name="np",
        space=SPACE,
        population_size=3,
        metric="loss",
        mode="min",
        ready=poptrain.every(READY),
        seed=0,
        root=tmp_path,
        **options,
    )


# --- a whole run --------------------------------------------------------------------------
@pytest.mark.parametrize("synchronous", [False, True])
def test_numpy_state_stops_the_run_at_the_first_save(tmp_path: Path, synchronous: bool) -> None:
    run = make_run(tmp_path, synchronous=synchronous)
    STEP_CALLS.clear()
    with pytest.raises(CheckpointError) as info:
        run.optimize(NumpyRegression, steps=4 * READY)
    assert str(info.value) == NUMPY_ERROR
    # trained up to the first ready point only: the first member's checkpoint is saved as its segment ends
    assert collections.Counter(STEP_CALLS) == {0: READY}
    assert run.refresh().record.state == "failed"
    failed = run.members()[0]
    assert (failed.state, failed.error, failed.failures) == ("failed", NUMPY_ERROR, 0)  # stored, not retried
    assert run.storage.get_checkpoints(run.record.id) == []
    assert not any(p.is_file() for p in (tmp_path / "np" / "checkpoints").rglob("*"))


def test_plain_quickstart_state_trains_to_the_end(tmp_path: Path) -> None:
    run = make_run(tmp_path, storage="memory").optimize(Regression, steps=2 * READY)
    assert run.record.state == "finished"
    assert all(m.step == 2 * READY for m in run.members())


def test_cli_prints_one_line_and_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from poptrain.cli.main import main

    experiment = tmp_path / "numpy_experiment.py"
    experiment.write_text(
        "import poptrain\n"
        "from test_checkpoint_state_types import NumpyRegression, SPACE\n"
        "def experiment():\n"
        "    return {'trainable': NumpyRegression, 'space': SPACE, 'population_size': 2, 'steps': 6,\n"
        "            'metric': 'loss', 'mode': 'min', 'ready': poptrain.every(3)}\n"
    )
    root = tmp_path / "runs"
    code = main(["run", str(experiment), "--root", str(root), "--quiet"])
    _, err = capsys.readouterr()
    assert code == 2
    assert err == f"poptrain: error: {NUMPY_ERROR}\n"
    assert poptrain.load_run("numpy_experiment", root=root).record.state == "failed"


@pytest.mark.slow  # spawns a worker process (about 4 s)
def test_processes_executor_stops_with_the_same_error(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    run = make_run(tmp_path)
    with pytest.raises(poptrain.PoptrainError) as info:
        run.optimize(NumpyRegression, steps=2 * READY, executor="processes", workers=1)
    assert capfd.readouterr().err == ""  # the worker process prints no traceback of its own
    assert str(info.value).splitlines() == [str(info.value)]
    assert str(info.value).endswith(NUMPY_ERROR)
    assert run.refresh().record.state == "failed"
    assert [m.error for m in run.members() if m.state == "failed"] == [NUMPY_ERROR]


def test_ask_tell_report_refuses_the_state_and_records_nothing(tmp_path: Path) -> None:
    run = make_run(tmp_path, storage="memory")
    with pytest.raises(CheckpointError, match=r"^state_dict\(\)\['best'\] holds a numpy.float64, "):
        run.report(0, READY, 1.0, state={"best": np.float64(0.5)})
    assert run.members()[0].step == 0 and run.scores() == []


# --- what check_loadable finds --------------------------------------------------------------
Point = collections.namedtuple("Point", "x y")


@dataclasses.dataclass
class Settings:
    lr: float = 0.1


class Color(enum.Enum):
    RED = 1


def _tensor_with(**attributes: Any) -> torch.Tensor:
    tensor = torch.ones(2)
    for name, value in attributes.items():
        setattr(tensor, name, value)
    return tensor


@pytest.mark.parametrize(
    ("state", "where"),
    [
        ({"rng": {"state": np.zeros(3)}}, "state_dict()['rng']['state'] holds a numpy.ndarray"),
        ({"best": np.float64(1.0)}, "state_dict()['best'] holds a numpy.float64"),
        (
            {"pcg": {"state": {"state": np.uint64(7), "inc": 1}}},
            "state_dict()['pcg']['state']['state'] holds a numpy.uint64",
        ),
        ({"numpy_global": np.random.get_state()}, "state_dict()['numpy_global'][1] holds a numpy.ndarray"),
        ({"counts": {np.int64(3): 1}}, "state_dict()['counts'] has a key np.int64(3) of type numpy.int64"),
        ({"t": _tensor_with(meta=np.ones(1))}, "state_dict()['t'].meta holds a numpy.ndarray"),
        ([1, [2, np.bool_(True)]], "state_dict()[1][1] holds a numpy.bool"),
    ],
)
def test_numpy_values_are_named_with_their_key_path(state: Any, where: str) -> None:
    with pytest.raises(CheckpointError) as info:
        serialize(state)
    assert str(info.value) == f"{where}, {WEIGHTS_ONLY}; {FIX}"


@pytest.mark.parametrize(
    ("value", "type_name"),
    [
        (collections.defaultdict(int), "collections.defaultdict"),
        (Point(1, 2), "test_checkpoint_state_types.Point"),
        (Settings(), "test_checkpoint_state_types.Settings"),
        (Color.RED, "test_checkpoint_state_types.Color"),
        (frozenset({1}), "frozenset"),
        (torch.Generator(), "torch._C.Generator"),
    ],
)
def test_other_refused_types_are_named(value: Any, type_name: str) -> None:
    with pytest.raises(
        CheckpointError,
        match=rf"^state_dict\(\)\['x'\] holds a {re.escape(type_name)}, {re.escape(WEIGHTS_ONLY)}; store tensors",
    ):
        serialize({"x": value})


def test_an_unpicklable_value_is_named_and_cannot_be_saved() -> None:
    with pytest.raises(
        CheckpointError, match=r"^cannot save the trainable's state: state_dict\(\)\['fn'\] holds a function "
    ):
        serialize({"fn": lambda: 1})


def test_the_first_refused_part_in_order_is_named() -> None:
    with pytest.raises(CheckpointError, match=r"^state_dict\(\)\['a'\]\[2\] holds a numpy.float32"):
        serialize({"ok": {1, 2}, "a": [1, 2, np.float32(3)], "b": np.zeros(2)})


SAFE_VALUES = {
    "tensors": {
        "w": torch.ones(2, 3),
        "p": torch.nn.Parameter(torch.zeros(2)),
        "view": torch.arange(6)[2:4],
        "sparse": torch.eye(2).to_sparse(),
        "bf16": torch.ones(2, dtype=torch.bfloat16),
        "attr": _tensor_with(tag=3),
    },
    "numbers": [1, 2.5, float("nan"), True, None, 2**100, "s"],
    "torch types": (torch.Size([2, 3]), torch.float16, torch.device("cpu")),
    "ordered": collections.OrderedDict(a=1),
    "not known but loadable": {"set": {1, 2}, "bytes": b"ab", "complex": 1j, "tuple keys": {(1, "a"): 2}},
    "rng states": {"torch": torch.get_rng_state(), "pcg64": np.random.default_rng(0).bit_generator.state},
}


@pytest.mark.parametrize("name", sorted(SAFE_VALUES))
def test_what_safe_loading_reads_is_saved(name: str) -> None:
    state = {name: SAFE_VALUES[name]}
    assert deserialize(serialize(state), "x").keys() == state.keys()


def test_a_shared_or_cyclic_structure_is_walked_once() -> None:
    shared = [torch.ones(1)]
    cyclic: list[Any] = [1]
    cyclic.append(cyclic)
    check_loadable({"a": shared, "b": shared, "c": cyclic})


@pytest.mark.parametrize(
    "value",
    [
        np.zeros(2),
        np.float64(1),
        np.int32(1),
        np.str_("a"),
        np.dtype("float32"),
        collections.Counter("ab"),
        collections.deque([1]),
        Point(1, 2),
        Settings(),
        Color.RED,
        frozenset({1}),
        slice(1, 2),
        range(3),
        ...,
        {1, np.int64(2)},
        torch.Generator(),
        torch.nn.Linear(1, 1),
        torch.float32,
        int,
        _tensor_with(m=np.ones(1)),
        torch.nn.Parameter(torch.ones(1)),
        torch.ones(2, 2).to_sparse(),
    ],
    ids=lambda value: type(value).__name__,
)
def test_saved_means_loadable(value: Any) -> None:
    """Whatever a state holds, either the save refuses it or the load reads it back."""
    try:
        data = serialize({"x": [value]})
    except CheckpointError:
        return
    deserialize(data, "x")


def test_a_refused_state_writes_no_file(tmp_path: Path) -> None:
    store = LocalCheckpointStore(tmp_path / "checkpoints")
    with pytest.raises(CheckpointError, match="numpy.ndarray"):
        store.save(0, 1, {"x": np.zeros(2)})
    assert not (tmp_path / "checkpoints").exists()


# --- loading -----------------------------------------------------------------------------
def _stored(store: InMemoryCheckpointStore, data: bytes) -> CheckpointRecord:
    uri = store.write("member-0000/step-00000001.pt", data)
    return CheckpointRecord(1, 0, 1, uri, sha256(data), len(data))


def _torch_saved(obj: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def test_a_numpy_checkpoint_is_refused_not_called_corrupt() -> None:
    store = InMemoryCheckpointStore()
    record = _stored(store, _torch_saved({"x": np.zeros(3)}))  # written by code without the check
    with pytest.raises(CheckpointError) as info:
        store.load(record)
    message = str(info.value)
    assert "corrupt" not in message and "\n" not in message
    assert message.startswith("checkpoint member-0000/step-00000001.pt holds numpy.")
    assert (
        "_reconstruct, which safe loading (torch.load(weights_only=True)) refuses; it was written by code that"
        in message
    )


class Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("how", ["torch.save", "pickle protocol 2", "pickle protocol 5"])
def test_a_malicious_checkpoint_is_refused_without_running(tmp_path: Path, how: str) -> None:
    marker = tmp_path / "pwned"
    if how == "torch.save":
        data = _torch_saved({"model": {"w": torch.ones(1)}, "x": Evil(marker)})
    else:
        data = pickle.dumps({"x": Evil(marker)}, protocol=int(how[-1]))
    store = InMemoryCheckpointStore()
    with pytest.raises(CheckpointError) as info:
        store.load(_stored(store, data))
    assert not marker.exists()
    assert "\n" not in str(info.value)
    if how != "pickle protocol 5":  # that one is not a torch checkpoint at all: "corrupt"
        assert "holds posix.system, which safe loading" in str(info.value) or "holds nt.system" in str(info.value)


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_a_damaged_checkpoint_is_still_corrupt(damage: str) -> None:
    good = serialize({"w": torch.ones(100)})
    data = good[: len(good) // 2] if damage == "truncated" else b"\x00garbage" * 10
    store = InMemoryCheckpointStore()
    with pytest.raises(CheckpointError, match=r"cannot be read \(\w+\); it is corrupt: delete it$"):
        store.load(_stored(store, data))
