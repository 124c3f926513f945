"""The checkpoint store contract: bytes in, a hashed reference out; load checks the hash."""

from __future__ import annotations

import hashlib
import io
import re
import uuid
from abc import ABC, abstractmethod
from collections import OrderedDict
from typing import Any

from poptrain.checkpoints.population import is_population_checkpoint, member_from_checkpoint
from poptrain.errors import CheckpointError
from poptrain.records import CheckpointRecord, NewCheckpoint

# how torch.load(weights_only=True) names a global it refuses; the wording changed across torch versions
_REFUSED_GLOBAL = re.compile(r"unsupported (?:global:? GLOBAL|GLOBAL|class) `?([\w.]*\w)", re.IGNORECASE)


def _type_name(obj: Any) -> str:
    """``numpy.ndarray``, ``collections.defaultdict``, ``set`` (no ``builtins.``)."""
    kind = type(obj)
    return kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"


class _Attr(str):
    """An attribute's name in a path (a tensor's ``.name``), not a key."""


def _path(where: tuple[Any, ...] | str) -> str:
    """``state_dict()['rng']['state']`` from the linked tuple ``(parent, key)`` the walk builds."""
    parts: list[str] = []
    while isinstance(where, tuple):
        where, key = where
        parts.append(f".{key}" if isinstance(key, _Attr) else f"[{key!r}]")
    return where + "".join(reversed(parts))


Where = tuple[Any, ...] | str

# A member checkpoint with its random state is the dict {MEMBER_KEY: MEMBER_FORMAT, "state": the
# trainable's state_dict(), "random_state": poptrain.random_state.capture(trainable)}; one without
# (written before random states were kept, or saved without one) is the bare state.
MEMBER_KEY = "__poptrain_checkpoint__"
MEMBER_FORMAT = "member+random_state/1"
_MEMBER_KEYS = {MEMBER_KEY, "state", "random_state"}


def _unverified(state: Any, root: str) -> list[tuple[Any, Where, bool]]:
    """The parts of ``state`` whose type safe loading may refuse, as ``(part, where, is_key)``,
    in order.

    Walks dicts, lists and tuples (exact types: subclasses such as ``numpy.float64`` or
    ``defaultdict`` are not trusted); tensors, numbers, strings, ``None``, ``torch.Size``,
    ``torch.dtype`` and ``torch.device`` are known to load. About 0.2 us per part.
    """
    import torch

    plain = {str, int, float, bool, type(None), torch.dtype, torch.device, torch.Size}
    tensors = {torch.Tensor, torch.nn.Parameter}
    unverified: list[tuple[Any, Where, bool]] = []
    seen: set[int] = set()

    def visit(obj: Any, where: Where) -> None:
        kind = type(obj)
        if kind in plain:
            return
        if kind in tensors:
            if obj.__dict__:  # attributes set on a tensor are saved with it
                for name, value in obj.__dict__.items():
                    visit(value, (where, _Attr(name)))
            return
        if kind is dict or kind is OrderedDict:
            items: Any = obj.items()
            for key in obj:
                if type(key) not in plain:
                    unverified.append((key, where, True))
        elif kind is list or kind is tuple:
            items = enumerate(obj)
        else:
            unverified.append((obj, where, False))
            return
        if id(obj) in seen:  # shared, or a cycle
            return
        seen.add(id(obj))
        for key, value in items:
            kind = type(value)
            if kind in tensors and not value.__dict__ or kind in plain:  # most parts: no call
                continue
            visit(value, (where, key))

    visit(state, root)
    return unverified


def _round_trip(obj: Any) -> tuple[str, Exception] | None:
    """Why ``obj`` cannot be written (``"save"``) or read back by safe loading (``"load"``), or
    ``None`` when it can."""
    import torch

    buffer = io.BytesIO()
    try:
        torch.save(obj, buffer)
    except Exception as exc:  # noqa: BLE001 - pickling errors come in many types; the caller words them
        return "save", exc
    try:
        torch.load(io.BytesIO(buffer.getvalue()), weights_only=True, map_location="cpu")
    except Exception as exc:  # noqa: BLE001 - as above
        return "load", exc
    return None


def _fix(obj: Any) -> str:
    """How to store ``obj`` instead."""
    if type(obj).__module__.split(".")[0] == "numpy":
        return "store tensors, lists or numbers instead (torch.from_numpy(x), x.tolist(), float(x))"
    return "store tensors, numbers, strings, lists and dicts instead (e.g. dict(x), list(x), float(x))"


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else ""


def check_loadable(state: Any, root: str = "state_dict()") -> None:
    """Raise ``CheckpointError`` naming the first part of ``state`` that a checkpoint cannot
    hold: one ``torch.save`` cannot write, or ``torch.load(weights_only=True)`` refuses.

    Only parts of types not known to load (``numpy`` values, sets, dict subclasses, user
    classes, ...) are written and read back, all at once, so a state of tensors, numbers,
    strings, lists and dicts costs only the walk; one that is refused never gets saved.
    """
    unverified = _unverified(state, root)
    together = _round_trip([part for part, _, _ in unverified]) if unverified else None
    if together is None:
        return
    for part, where, is_key in unverified:
        failed = _round_trip(part)
        if failed is None:
            continue
        stage, exc = failed
        if is_key:
            place = f"{_path(where)} has a key {part!r} of type {_type_name(part)}"
        else:
            place = f"{_path(where)} holds a {_type_name(part)}"
        if stage == "load":
            raise CheckpointError(
                f"{place}, which checkpoints cannot hold (they are loaded with torch.load(weights_only=True)); {_fix(part)}"
            )
        raise CheckpointError(
            f"cannot save the trainable's state: {place} ({type(exc).__name__}: {_first_line(exc)}); {_fix(part)}"
        )
    _, exc = together  # refused only together: never seen, but never saved either
    raise CheckpointError(
        f"cannot save the trainable's state: it holds objects that checkpoints cannot hold ({type(exc).__name__}: "
        f"{_first_line(exc)}); state_dict() must return tensors, numbers, strings, lists and dicts"
    )


def serialize(state: Any, root: str = "state_dict()") -> bytes:
    """Serialise a member's state (tensors, numbers, strings, lists and dicts) with ``torch.save``,
    first checking that ``deserialize`` will read it back (``check_loadable``)."""
    check_loadable(state, root)
    return _dump(state)


def serialize_member(state: Any, random_state: Any) -> bytes:
    """Serialise a member's state and its random state (``poptrain.random_state.capture``) into
    one file: a dict ``{MEMBER_KEY: MEMBER_FORMAT, "state": ..., "random_state": ...}``, each part
    checked as ``serialize`` checks a state."""
    check_loadable(state)
    check_loadable(random_state, "random_state")
    return _dump({MEMBER_KEY: MEMBER_FORMAT, "state": state, "random_state": random_state})


def split_member(stored: Any) -> tuple[Any, dict[str, Any] | None]:
    """``(state, random_state)`` of what a member checkpoint holds: a file written by
    ``serialize_member``, or one written by ``serialize`` (a bare state, no random state)."""
    if type(stored) is dict and stored.get(MEMBER_KEY) == MEMBER_FORMAT and stored.keys() == _MEMBER_KEYS:
        return stored["state"], stored["random_state"]
    return stored, None


def _dump(obj: Any) -> bytes:
    import torch

    buffer = io.BytesIO()
    try:
        torch.save(obj, buffer)
    except Exception as exc:  # pickling errors come in many types
        raise CheckpointError(
            f"cannot save the trainable's state ({type(exc).__name__}: {_first_line(exc)}); "
            "state_dict() must return tensors, numbers, strings, lists and dicts"
        ) from exc
    return buffer.getvalue()


def deserialize(data: bytes, where: str) -> Any:
    """Read a state written by ``serialize``, allowing only plain data (``weights_only=True``):
    a checkpoint holding any other object is refused without running anything from it."""
    import warnings

    import torch

    try:
        with warnings.catch_warnings():  # torch warns about odd pickle protocols; the error below says what matters
            warnings.simplefilter("ignore")
            return torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    except Exception as exc:
        refused = _REFUSED_GLOBAL.search(str(exc))
        if refused is not None:
            raise CheckpointError(
                f"checkpoint {where} holds {refused.group(1)}, which safe loading (torch.load(weights_only=True)) refuses; "
                "it was written by code that stored such an object (or by a malicious writer) and will not be loaded"
            ) from exc
        raise CheckpointError(
            f"checkpoint {where} cannot be read ({type(exc).__name__}); it is corrupt: delete it"
        ) from exc


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _load_own(data: bytes) -> Any:
    """Read bytes this process serialised itself (``serialize`` checked that safe loading reads
    them) with torch's full unpickler: the same plain objects, faster than ``weights_only=True``,
    whose unpickler is written in Python."""
    import torch

    return torch.load(io.BytesIO(data), weights_only=False, map_location="cpu")


# how many of its newest checkpoints a store remembers having written (64 bytes of digest each)
_OWN_DIGESTS = 4096


class CheckpointStore(ABC):
    """Where member states are kept. ``save`` is atomic; ``load`` verifies the sha256."""

    @abstractmethod
    def write(self, key: str, data: bytes) -> str:
        """Store ``data`` under ``key`` atomically and return its URI."""

    @abstractmethod
    def read(self, uri: str) -> bytes:
        """The bytes at ``uri``; ``CheckpointError`` if missing."""

    @abstractmethod
    def delete(self, uri: str) -> None:
        """Remove the bytes at ``uri`` if present."""

    def flush(self) -> None:
        """Return once every file handed to this store is written (raising the first write that
        failed). The bundled stores write before ``write`` returns: nothing to wait for."""

    def save(self, slot: int, step: int, state: Any, *, random_state: dict[str, Any] | None = None) -> NewCheckpoint:
        """Serialise and store a member's state at a step, with its random state
        (``poptrain.random_state.capture``) in the same file when given. Every save is a new
        file: a member that copied an older model trains some steps again, and a worker whose
        lease ran out may still finish a segment another worker took over; neither may replace a
        checkpoint already recorded for that step."""
        data = serialize(state) if random_state is None else serialize_member(state, random_state)
        uri = self.write(f"member-{slot:04d}/step-{step:08d}-{uuid.uuid4().hex[:8]}.pt", data)
        return NewCheckpoint(uri, self._written(data), len(data))

    def save_population(self, step: int, state: Any) -> NewCheckpoint:
        """Serialise and store a whole population's state (one file that many members' checkpoint
        records share, each naming its own slot)."""
        data = serialize(state, "the population's state")
        uri = self.write(f"population/step-{step:08d}-{uuid.uuid4().hex[:8]}.pt", data)
        return NewCheckpoint(uri, self._written(data), len(data))

    def _written(self, data: bytes) -> str:
        """The sha256 of ``data``, which this store serialised and wrote, remembered (the newest
        ``_OWN_DIGESTS``): a checkpoint read back with the same digest holds exactly those bytes,
        so it is loaded without safe loading's cost (``_load_own``)."""
        digest = sha256(data)
        own: OrderedDict[str, None] = self.__dict__.setdefault("_own_digests", OrderedDict())
        own[digest] = None
        if len(own) > _OWN_DIGESTS:
            own.popitem(last=False)
        return digest

    def load_member(self, record: CheckpointRecord) -> Any:
        """The state of the member that saved ``record``, cut out of a population checkpoint
        when it is one."""
        return self.load_member_and_random_state(record)[0]

    def load_member_and_random_state(self, record: CheckpointRecord) -> tuple[Any, dict[str, Any] | None]:
        """``(state, random_state)`` of the member that saved ``record``, the file read once:
        the random state for ``poptrain.random_state.restore``, ``None`` when the checkpoint has
        none (written without one, or a population checkpoint)."""
        state, random_state = split_member(self._load_stored(record))
        if is_population_checkpoint(state):
            return member_from_checkpoint(state, record.slot), None
        return state, random_state

    def load(self, record: CheckpointRecord) -> Any:
        """Read a checkpoint's state back (without its random state), refusing one whose bytes
        do not match the recorded sha256."""
        return split_member(self._load_stored(record))[0]

    def _load_stored(self, record: CheckpointRecord) -> Any:
        """What the checkpoint file holds, its sha256 checked."""
        data = self.read(record.uri)
        digest = sha256(data)
        if digest != record.sha256:
            raise CheckpointError(
                f"checkpoint {record.uri} of member {record.slot} at step {record.step} is corrupt "
                "(sha256 mismatch); delete it, or restore it from a backup"
            )
        if digest in self.__dict__.get("_own_digests", ()):
            return _load_own(data)
        return deserialize(data, record.uri)
