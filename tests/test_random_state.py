"""A member's random state: captured with its checkpoint, restored when it is rebuilt from it."""

from __future__ import annotations

import io
import random
import warnings
from typing import Any

import numpy as np
import pytest
import torch

from poptrain.checkpoints import InMemoryCheckpointStore, LocalCheckpointStore, check_loadable, deserialize
from poptrain.checkpoints._base import MEMBER_FORMAT, MEMBER_KEY
from poptrain.random_state import MAX_ITEMS, Snapshot, capture, restore, seed_globals, seed_torch, snapshot
from poptrain.records import CheckpointRecord, NewCheckpoint
from poptrain.trainable import TrainContext


def _record(new: NewCheckpoint, slot: int = 0, step: int = 1) -> CheckpointRecord:
    return CheckpointRecord(1, slot, step, new.uri, new.sha256, new.size_bytes)


def _global_draws() -> list[Any]:
    return [torch.rand(4).tolist(), np.random.rand(4).tolist(), [random.random() for _ in range(4)], random.gauss(0, 1)]


class _Helper:
    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.name = "helper"


class _Noisy(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(3, 3)
        self.generator = torch.Generator().manual_seed(11)


class _Owner:
    """Every kind of generator, at every place ``capture`` looks."""

    extra: Any

    def __init__(self, seed: int = 0) -> None:
        self.torch_gen = torch.Generator().manual_seed(seed)
        self.numpy_gen = np.random.default_rng(seed)
        self.philox: Any = np.random.Generator(np.random.Philox(seed))  # uint64 arrays in its state
        self.mt = np.random.Generator(np.random.MT19937(seed))  # a uint32 array
        self.legacy = np.random.RandomState(seed)
        self.python: Any = random.Random(seed)
        self.listed: list[Any] = [torch.Generator().manual_seed(seed + 1), 3, random.Random(seed + 1)]
        self.tupled = (np.random.RandomState(seed + 2),)
        self.named: dict[str, Any] = {
            "noise": np.random.default_rng(seed + 3),
            "order": torch.Generator().manual_seed(seed + 3),
            "n": 1,
        }
        self.helper = _Helper(seed + 4)
        self.model = _Noisy()
        self.weights = torch.zeros(3)
        self.system = random.SystemRandom()  # no state: skipped


def _owned_draws(owner: _Owner) -> list[Any]:
    return [
        torch.rand(3, generator=owner.torch_gen).tolist(),
        owner.numpy_gen.random(3).tolist(),
        owner.philox.random(3).tolist(),
        owner.mt.integers(0, 2**62, 3).tolist(),
        owner.legacy.rand(3).tolist(),
        owner.legacy.standard_normal(),  # a cached gaussian in the legacy state
        owner.python.random(),
        owner.python.gauss(0, 1),
        torch.randint(100, (3,), generator=owner.listed[0]).tolist(),
        owner.listed[2].random(),
        owner.tupled[0].rand(2).tolist(),
        owner.named["noise"].random(2).tolist(),
        torch.rand(2, generator=owner.named["order"]).tolist(),
        owner.helper.rng.random(2).tolist(),
        torch.rand(2, generator=owner.model.generator).tolist(),
    ]


def test_globals_draw_the_same_after_restore() -> None:
    random.gauss(0, 1)  # leaves a cached gauss_next in random's state
    saved = capture(object())
    first = _global_draws()
    _global_draws()
    restore(object(), saved)
    assert _global_draws() == first


def test_owned_generators_draw_the_same_after_restore() -> None:
    owner = _Owner()
    _owned_draws(owner)  # not at their seeds' states
    saved = capture(owner)
    assert set(saved["generators"]) == {
        "torch_gen",
        "numpy_gen",
        "philox",
        "mt",
        "legacy",
        "python",
        "listed[0]",
        "listed[2]",
        "tupled[0]",
        "named['noise']",
        "named['order']",
        "helper.rng",
        "model.generator",
    }
    first = _owned_draws(owner)
    _owned_draws(owner)
    restore(owner, saved)
    assert _owned_draws(owner) == first


def test_restore_into_a_fresh_owner() -> None:
    owner = _Owner(seed=1)
    _owned_draws(owner)
    saved = capture(owner)
    expected = _owned_draws(owner)
    fresh = _Owner(seed=99)
    restore(fresh, saved)
    assert _owned_draws(fresh) == expected


def test_generators_on_the_owner_only_are_ignored_and_missing_ones_kept() -> None:
    owner = _Owner()
    saved = capture(owner)
    fresh = _Owner(seed=5)
    del fresh.python
    fresh.extra = torch.Generator().manual_seed(5)  # not in saved: left as it is
    expected_extra = torch.rand(2, generator=torch.Generator().manual_seed(5)).tolist()
    restore(fresh, saved)
    assert torch.rand(2, generator=fresh.extra).tolist() == expected_extra
    assert fresh.numpy_gen.random() == np.random.default_rng(0).random()


def test_a_generator_of_another_kind_is_left_with_a_warning() -> None:
    owner = _Owner()
    saved = capture(owner)
    fresh = _Owner()
    fresh.python = np.random.default_rng(7)
    with pytest.warns(RuntimeWarning, match="random state of python not restored"):
        restore(fresh, saved)
    assert fresh.python.random() == np.random.default_rng(7).random()
    other = _Owner()
    other.philox = np.random.default_rng(3)  # another bit generator: numpy refuses the state
    with pytest.warns(RuntimeWarning, match="random state of philox not restored"):
        restore(other, saved)


def test_a_cuda_generator_is_not_restored_into_a_cpu_one() -> None:
    owner = _Owner()
    saved = capture(owner)
    saved["generators"]["torch_gen"]["device"] = "cuda:0"
    fresh = _Owner(seed=2)
    with pytest.warns(RuntimeWarning, match="saved from a cuda:0 generator"):
        restore(fresh, saved)
    assert (
        torch.rand(1, generator=fresh.torch_gen).item()
        == torch.rand(1, generator=torch.Generator().manual_seed(2)).item()
    )


def test_what_capture_does_not_search() -> None:
    class Big:
        def __init__(self) -> None:
            self.rows = [random.Random(i) for i in range(MAX_ITEMS + 1)]  # a dataset-sized list
            self.deep = {"a": {"b": random.Random(0)}}  # two levels down
            self.module = torch.nn.Sequential(_Noisy())  # a submodule's attributes
            self.tensor = torch.zeros(2)

    assert capture(Big())["generators"] == {}


def test_restore_refuses_what_capture_did_not_write() -> None:
    with pytest.raises(ValueError, match="not a random state"):
        restore(object(), {"torch": torch.get_rng_state()})


def test_seed_globals() -> None:
    seed_globals(7)
    first = _global_draws()
    seed_globals(7)
    assert _global_draws() == first
    seed_globals(8)
    assert _global_draws() != first
    seed_globals(7)
    torch_seed = torch.initial_seed()
    legacy = np.random.get_state()
    assert isinstance(legacy, tuple)
    assert torch_seed != 7 and torch_seed < 2**32 and legacy[1][0] != torch_seed


def test_captured_state_is_plain_data_that_safe_loading_reads() -> None:
    saved = capture(_Owner())
    check_loadable(saved, "random_state")
    buffer = io.BytesIO()
    torch.save(saved, buffer)
    loaded = deserialize(buffer.getvalue(), "test")  # weights_only=True
    owner = _Owner()
    expected = _owned_draws(owner)
    restore(owner, loaded)
    assert _owned_draws(owner) == expected


@pytest.mark.parametrize("kind", ["memory", "local"])
def test_random_state_round_trips_through_a_checkpoint_store(kind: str, tmp_path: Any) -> None:
    store = InMemoryCheckpointStore() if kind == "memory" else LocalCheckpointStore(tmp_path / "ckpt")
    owner = _Owner()
    state: dict[str, Any] = {"w": torch.arange(3.0), "epoch": 4}
    saved = capture(owner)
    expected_owned, expected_global = _owned_draws(owner), _global_draws()
    record = _record(store.save(2, 4, state, random_state=saved), slot=2, step=4)

    loaded_state, loaded_random = store.load_member_and_random_state(record)
    assert torch.equal(loaded_state["w"], state["w"]) and loaded_state["epoch"] == 4
    assert loaded_random is not None
    fresh = _Owner(seed=3)
    restore(fresh, loaded_random)
    assert (_owned_draws(fresh), _global_draws()) == (expected_owned, expected_global)
    # the state alone, as before
    assert store.load_member(record).keys() == state.keys()
    assert store.load(record).keys() == state.keys()
    # one file, the random state next to the state
    stored = deserialize(store.read(record.uri), record.uri)
    assert stored.keys() == {MEMBER_KEY, "state", "random_state"} and stored[MEMBER_KEY] == MEMBER_FORMAT


def test_checkpoints_without_random_state_load_with_none(tmp_path: Any) -> None:
    store = LocalCheckpointStore(tmp_path)
    state: dict[str, Any] = {"w": torch.ones(2), "step": 3}
    record = _record(store.save(0, 3, state))  # saved without a random state: the old format, a bare state
    assert deserialize(store.read(record.uri), record.uri).keys() == state.keys()
    loaded, random_state = store.load_member_and_random_state(record)
    assert random_state is None and torch.equal(loaded["w"], state["w"])
    buffer = io.BytesIO()
    torch.save(state, buffer)  # a file as older poptrain wrote it
    data = buffer.getvalue()
    from poptrain.checkpoints import sha256

    old = _record(NewCheckpoint(store.write("member-0001/step-00000003.pt", data), sha256(data), len(data)))
    loaded, random_state = store.load_member_and_random_state(old)
    assert random_state is None and loaded["step"] == 3


def test_a_random_state_checkpoints_cannot_hold_is_refused() -> None:
    from poptrain import CheckpointError

    with pytest.raises(CheckpointError, match=r"random_state\['bad'\] holds a numpy.ndarray"):
        InMemoryCheckpointStore().save(0, 1, {"w": 1}, random_state={"bad": np.zeros(2)})


def test_digits_member_rebuilt_from_its_checkpoint_trains_as_the_live_one(tmp_path: Any) -> None:
    pytest.importorskip("sklearn")
    from poptrain.experiments.digits import DigitsMLP

    hparams = {"lr": 0.05, "momentum": 0.9, "weight_decay": 1e-4, "dropout": 0.3}
    context = TrainContext("digits", 3, 1234)

    def losses(trainable: DigitsMLP, steps: int) -> list[float]:
        out = []
        for _ in range(steps):
            trainable.step()
            out.append(trainable.evaluate()["val_loss"])
        return out

    def rebuilt(state: Any, random_state: dict[str, Any] | None) -> DigitsMLP:
        trainable = DigitsMLP()
        trainable.setup(hparams, context)
        trainable.load_state_dict(state)
        trainable.set_hparams(hparams)
        if random_state is not None:
            restore(trainable, random_state)
        return trainable

    store = LocalCheckpointStore(tmp_path)
    live = DigitsMLP()
    live.setup(hparams, context)
    losses(live, 5)
    record = _record(store.save(3, 5, live.state_dict(), random_state=capture(live)), slot=3, step=5)
    expected = losses(live, 5)

    torch.manual_seed(999)  # another member trained in this process meanwhile
    np.random.seed(999)
    state, random_state = store.load_member_and_random_state(record)
    assert losses(rebuilt(state, random_state), 5) == expected
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing skipped
        assert losses(rebuilt(*store.load_member_and_random_state(record)), 5) == expected
    assert losses(rebuilt(state, None), 5) != expected  # the weights alone do not resume exactly


def _same_plain_data(a: Any, b: Any) -> bool:
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same_plain_data(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same_plain_data(x, y) for x, y in zip(a, b))
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    return type(a) is type(b) and a == b


def test_a_snapshot_encodes_to_what_capture_returns() -> None:
    owner = _Owner()
    _owned_draws(owner)
    random.gauss(0, 1)
    taken = snapshot(owner)
    assert _same_plain_data(taken.encode(), capture(owner))
    _owned_draws(owner)  # drawing later does not change what the snapshot holds
    _global_draws()
    assert not _same_plain_data(taken.encode(), capture(owner))
    restore(owner, taken.encode())
    assert _same_plain_data(taken.encode(), capture(owner))


def test_a_snapshot_restores_the_globals_and_the_owners_generators() -> None:
    owner = _Owner()
    _owned_draws(owner)
    random.gauss(0, 1)  # a cached gauss_next
    taken = snapshot(owner)
    expected = (_owned_draws(owner), _global_draws())
    seed_globals(5)  # another member's turn
    _owned_draws(owner)
    taken.restore()
    assert (_owned_draws(owner), _global_draws()) == expected
    taken.restore()  # again: the snapshot is not used up
    assert (_owned_draws(owner), _global_draws()) == expected
    assert isinstance(taken, Snapshot)


def test_seed_torch_draws_what_torch_manual_seed_draws() -> None:
    torch.manual_seed(123)
    expected = torch.rand(5).tolist(), torch.nn.functional.dropout(torch.ones(8), 0.5).tolist()
    torch.manual_seed(9)
    seed_torch(123)
    assert (torch.rand(5).tolist(), torch.nn.functional.dropout(torch.ones(8), 0.5).tolist()) == expected
    assert torch.initial_seed() == 123
    seed_torch(2**63)  # torch's whole range of seeds
    assert torch.initial_seed() == 2**63


def test_seed_globals_draws_what_it_drew_with_torch_manual_seed() -> None:
    torch_seed, numpy_seed, python_seed = (int(s) for s in np.random.SeedSequence(7).generate_state(3))
    torch.manual_seed(torch_seed)
    np.random.seed(numpy_seed)
    random.seed(python_seed)
    expected = _global_draws()
    seed_globals(7)
    assert _global_draws() == expected


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA present: its seed is queued, with a stack trace")
def test_seed_torch_records_no_stack_for_backends_this_machine_lacks(monkeypatch: pytest.MonkeyPatch) -> None:
    import traceback

    stacks: list[int] = []
    format_stack = traceback.format_stack
    monkeypatch.setattr(traceback, "format_stack", lambda *a, **k: stacks.append(1) or format_stack(*a, **k))
    torch.manual_seed(1)
    assert stacks  # what seed_torch avoids: torch queues the seed for CUDA, XPU, MTIA with a stack each
    stacks.clear()
    seed_torch(1)
    seed_globals(1)
    assert stacks == []


def test_digits_dropout_seeding_draws_what_torch_manual_seed_drew() -> None:
    pytest.importorskip("sklearn")
    from poptrain.experiments.digits import build_model, seed_dropout

    model = build_model(0.5)
    model.train()
    x = torch.ones(4, 64)
    generator = torch.Generator().manual_seed(3)
    torch.manual_seed(int(torch.randint(2**31, (1,), generator=generator)))  # what DigitsMLP.step did before
    expected = model(x).tolist()
    generator = torch.Generator().manual_seed(3)
    seed_dropout(model, generator)
    assert model(x).tolist() == expected


class _Drawing:
    """A trainable whose scores are random draws: from torch's, NumPy's and ``random``'s global
    generators and from a generator it holds, in ``step()`` and in ``set_hparams()``."""

    def setup(self, hparams: Any, context: TrainContext) -> None:
        self.rng = np.random.default_rng(context.seed)
        self.total = float(torch.rand(1)) + float(hparams["h"])

    def step(self) -> None:
        self.total += float(torch.rand(1)) + np.random.rand() + random.random() + self.rng.random()

    def evaluate(self) -> float:
        return self.total

    def state_dict(self) -> Any:
        return {"total": self.total}

    def load_state_dict(self, state: Any) -> None:
        self.total = float(state["total"])

    def set_hparams(self, hparams: Any) -> None:
        self.total += 0.0 * float(torch.rand(1)) + 0.0 * random.random()  # draws, which the member's state undoes


def test_live_and_parked_members_draw_the_same(tmp_path: Any) -> None:
    """A trainable kept live between its segments (its random state kept as a snapshot) draws
    exactly what one parked in its checkpoint and rebuilt from it (the encoded state) draws."""
    import poptrain

    def scores(executor: Any, name: str) -> list[tuple[int, int, float]]:
        run = poptrain.create_run(
            name=name,
            space={"h": poptrain.Float(0.0, 1.0)},
            population_size=3,
            metric="score",
            ready=poptrain.every(2),
            exploit=poptrain.truncation(0.34),
            explore=poptrain.perturb((0.8, 1.2)),
            seed=3,
            root=tmp_path,
        )
        class_ = type("Drawing", (_Drawing, poptrain.Trainable), {})
        done = run.optimize(class_, steps=8, executor=executor)
        try:
            assert any(g.kind == "exploit" for g in done.lineage())
            return sorted((s.slot, s.step, s.value) for s in done.scores())
        finally:
            done.close()

    live = scores(poptrain.SequentialExecutor(), "live")
    assert scores(poptrain.SequentialExecutor(max_live=1), "parked") == live
