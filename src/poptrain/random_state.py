"""A member's random state: the global generators (torch, NumPy, Python's ``random``) and the
generators its trainable holds, captured as plain data a checkpoint can store and restored
from it, so that a member rebuilt from its checkpoint draws what the live one would have.

What ``capture`` finds on the trainable (``owner``): attributes whose values are a
``torch.Generator``, ``numpy.random.Generator``, ``numpy.random.RandomState`` or
``random.Random``; such values inside a list, tuple or dict attribute (one level, at most
``MAX_ITEMS`` items); and such attributes of an attribute object (a data loader, a sampler
helper, a module's own attributes; one level, never parameters, buffers or submodules).
Each is keyed by its path: ``generator``, ``rngs[0]``, ``rngs['noise']``, ``loader.generator``.
Generators kept deeper than that are not found: keep them in ``state_dict()`` instead.

The captured dict holds only tensors, numbers, strings, lists and dicts (no NumPy values), so
``torch.load(weights_only=True)`` reads it back. No I/O here.
"""

from __future__ import annotations

import functools
import random
import types
import warnings
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

__all__ = ["FORMAT", "MAX_ITEMS", "Snapshot", "capture", "restore", "seed_globals", "seed_torch", "snapshot"]

FORMAT = "poptrain.random_state/1"
MAX_ITEMS = 256  # a container with more items (a dataset as a list, say) is not searched

_ARRAY = "__ndarray__"  # marks an encoded numpy array: {"__ndarray__": dtype, "values": tensor}
_TORCH, _NUMPY, _LEGACY, _PYTHON = (
    "torch.Generator",
    "numpy.random.Generator",
    "numpy.random.RandomState",
    "random.Random",
)


@functools.cache
def _types() -> tuple[tuple[type, ...], frozenset[type], tuple[type, ...]]:
    """The generator types; the types never holding one, checked by exact type first; the
    types not searched as helpers. Built on first use: importing this module imports no torch."""
    import torch

    generators = (torch.Generator, np.random.Generator, np.random.RandomState, random.Random)
    skip: frozenset[type] = frozenset(
        {int, float, str, bool, bytes, type(None), torch.Tensor, torch.nn.Parameter, np.ndarray}
    )
    not_helpers = (
        type,
        types.ModuleType,
        types.FunctionType,
        types.MethodType,
        types.BuiltinFunctionType,
        torch.Tensor,
    )
    return generators, skip, not_helpers


def seed_torch(seed: int) -> None:
    """Seed torch's CPU generator, and those of the accelerators this machine has (CUDA, MPS,
    XPU), with ``seed``: what ``torch.manual_seed(seed)`` does, without its cost.

    ``torch.manual_seed`` also queues the seed for each backend not yet initialised (CUDA,
    XPU, MTIA), recording ``traceback.format_stack()`` with it: 0.15 ms at the top of a
    program, about 1 ms deep inside one (in a trainable's ``step()``), even on a machine with
    no accelerator. Here a backend is seeded only when it is available, so on a CPU machine
    this is one ``torch.random.default_generator.manual_seed(seed)`` (about 2 us) and torch
    draws exactly what it would after ``torch.manual_seed``; CUDA is still seeded now, or when
    it initialises. (Out-of-tree ``privateuse1`` backends are not seeded.)"""
    import torch

    seed = int(seed)
    torch.random.default_generator.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    if torch.backends.mps.is_available():
        torch.mps.manual_seed(seed)
    if torch.xpu.is_available():
        torch.xpu.manual_seed_all(seed)


def seed_globals(seed: int) -> None:
    """Seed torch (CPU, and each accelerator present, now or when it initialises: see
    ``seed_torch``), NumPy's global generator and Python's ``random`` from one non-negative
    ``seed``, each with its own 32-bit seed."""
    torch_seed, numpy_seed, python_seed = (int(s) for s in np.random.SeedSequence(seed).generate_state(3))
    seed_torch(torch_seed)
    np.random.seed(numpy_seed)
    random.seed(python_seed)


class Snapshot:
    """A member's random state as the generators hold it, not encoded as plain data.

    What a member runner keeps for a trainable that stays live between its segments: putting
    the member's state back (``restore``) then costs no decoding, and ``encode`` gives the
    form a checkpoint stores, the form ``capture`` returns (``capture(owner)`` is
    ``snapshot(owner).encode()``). It holds the owner's generators themselves, so it is for
    this process only: never pickle or store it.
    """

    __slots__ = ("cuda", "numpy", "owned", "python", "torch")

    def __init__(self, owner: object) -> None:
        import torch

        self.torch = torch.get_rng_state()
        self.cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
        self.numpy = np.random.get_state(legacy=False)
        self.python = random.getstate()
        self.owned = [(path, gen, _state_of(gen)) for path, gen in _owned(owner)]

    def encode(self) -> dict[str, Any]:
        """This snapshot as plain data for a checkpoint (what ``capture`` returns)."""
        saved: dict[str, Any] = {
            "format": FORMAT,
            "torch": self.torch,
            "numpy": _encode(self.numpy),
            "python": _encode_python(self.python),
            "generators": {path: _encode_one(gen, state) for path, gen, state in self.owned},
        }
        if self.cuda is not None:
            saved["cuda"] = self.cuda
        return saved

    def restore(self) -> None:
        """Set the global generators, and the owner's generators it holds, back to this
        snapshot: what ``restore(owner, snapshot.encode())`` does, without decoding."""
        import torch

        torch.set_rng_state(self.torch)
        if self.cuda is not None and torch.cuda.is_initialized() and len(self.cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(self.cuda)
        np.random.set_state(self.numpy)
        random.setstate(self.python)
        for _path, gen, state in self.owned:
            _set_state_of(gen, state)


def snapshot(owner: object) -> Snapshot:
    """The global random states and those of the generators ``owner`` holds (see the module
    docstring), as the generators hold them (see ``Snapshot``)."""
    return Snapshot(owner)


def capture(owner: object) -> dict[str, Any]:
    """The global random states and those of the generators ``owner`` holds (see the module
    docstring), as plain data for a checkpoint."""
    return Snapshot(owner).encode()


def restore(owner: object, saved: Mapping[str, Any]) -> None:
    """Set the global random states and those of ``owner``'s generators to what ``capture``
    saved. A saved generator that ``owner`` no longer has is ignored; one whose kind or device
    differs (a CUDA generator saved, a CPU one now) is left as it is, with a warning."""
    if saved.get("format") != FORMAT:
        raise ValueError(f"not a random state captured by poptrain.random_state (format {saved.get('format')!r})")
    import torch

    torch.set_rng_state(saved["torch"])
    cuda = saved.get("cuda")
    if cuda is not None and torch.cuda.is_initialized() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    np.random.set_state(_decode(saved["numpy"]))
    random.setstate(_decode_python(saved["python"]))
    generators: Mapping[str, Any] = saved.get("generators") or {}
    if not generators:
        return
    for path, gen in _owned(owner):
        if path in generators:
            _restore_one(path, gen, generators[path])


def _owned(owner: object) -> Iterator[tuple[str, Any]]:
    """``(path, generator)`` for each generator ``owner`` holds, in attribute order."""
    attrs = getattr(owner, "__dict__", None)
    if not isinstance(attrs, dict):
        return
    generators, skip, not_helpers = _types()
    for name, value in list(attrs.items()):
        kind = type(value)
        if kind in skip:
            continue
        if isinstance(value, generators):
            if _capturable(value):
                yield name, value
        elif isinstance(value, (list, tuple)):
            if len(value) <= MAX_ITEMS:
                yield from ((f"{name}[{i}]", item) for i, item in enumerate(value) if _is_generator(item))
        elif isinstance(value, dict):
            if len(value) <= MAX_ITEMS:
                yield from ((f"{name}[{key!r}]", item) for key, item in list(value.items()) if _is_generator(item))
        elif not isinstance(value, not_helpers):
            inner = getattr(value, "__dict__", None)
            if isinstance(inner, dict) and len(inner) <= MAX_ITEMS:
                yield from ((f"{name}.{key}", item) for key, item in list(inner.items()) if _is_generator(item))


def _is_generator(value: Any) -> bool:
    generators, skip, _ = _types()
    return type(value) not in skip and isinstance(value, generators) and _capturable(value)


def _capturable(gen: Any) -> bool:
    """Not ``random.SystemRandom``, which has no state."""
    return not isinstance(gen, random.SystemRandom)


def _state_of(gen: Any) -> Any:
    """A generator's state as it gives it (a copy: ``gen`` drawing later leaves it as it is)."""
    import torch

    if isinstance(gen, torch.Generator):
        return gen.get_state()
    if isinstance(gen, np.random.Generator):
        return gen.bit_generator.state
    if isinstance(gen, np.random.RandomState):
        return gen.get_state(legacy=False)
    return gen.getstate()


def _set_state_of(gen: Any, state: Any) -> None:
    """Put ``state`` (from ``_state_of(gen)``) back into ``gen``."""
    import torch

    if isinstance(gen, torch.Generator):
        gen.set_state(state)
    elif isinstance(gen, np.random.Generator):
        gen.bit_generator.state = state
    elif isinstance(gen, np.random.RandomState):
        gen.set_state(state)
    else:
        gen.setstate(state)


def _encode_one(gen: Any, state: Any) -> dict[str, Any]:
    """``_state_of(gen)`` as plain data, tagged with the generator's kind."""
    import torch

    if isinstance(gen, torch.Generator):
        return {"type": _TORCH, "device": str(gen.device), "state": state}
    if isinstance(gen, np.random.Generator):
        return {"type": _NUMPY, "state": _encode(state)}
    if isinstance(gen, np.random.RandomState):
        return {"type": _LEGACY, "state": _encode(state)}
    return {"type": _PYTHON, "state": _encode_python(state)}


def _restore_one(path: str, gen: Any, saved: Mapping[str, Any]) -> None:
    import torch

    kind = saved.get("type")
    try:
        if kind == _TORCH and isinstance(gen, torch.Generator):
            if torch.device(saved["device"]).type != gen.device.type:
                _skipped(path, f"saved from a {saved['device']} generator, it is on {gen.device} now")
                return
            gen.set_state(saved["state"])
        elif kind == _NUMPY and isinstance(gen, np.random.Generator):
            gen.bit_generator.state = _decode(saved["state"])
        elif kind == _LEGACY and isinstance(gen, np.random.RandomState):
            gen.set_state(_decode(saved["state"]))
        elif kind == _PYTHON and isinstance(gen, random.Random):
            gen.setstate(_decode_python(saved["state"]))
        else:
            _skipped(path, f"a {kind} was saved, it is a {type(gen).__name__} now")
    except (ValueError, TypeError, RuntimeError) as exc:  # another bit generator, a CUDA device that is gone
        _skipped(path, str(exc))


def _skipped(path: str, why: str) -> None:
    warnings.warn(f"random state of {path} not restored: {why}", RuntimeWarning, stacklevel=4)


def _encode(value: Any) -> Any:
    """A NumPy generator state as plain data: arrays become tagged tensors, NumPy scalars Python numbers."""
    import torch

    if isinstance(value, dict):
        return {key: _encode(item) for key, item in value.items()}
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "iu" and value.dtype.itemsize == 8:  # uint64 keeps its bits as int64
            tensor = torch.from_numpy(np.ascontiguousarray(value).view(np.int64).copy())
        elif value.dtype.kind in "iub":
            tensor = torch.from_numpy(value.astype(np.int64))
        else:
            tensor = torch.from_numpy(value.astype(np.float64))
        return {_ARRAY: value.dtype.str, "values": tensor}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_encode(item) for item in value]
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        if _ARRAY in value:
            dtype = np.dtype(value[_ARRAY])
            array = value["values"].numpy()
            return array.view(dtype).copy() if dtype.kind in "iu" and dtype.itemsize == 8 else array.astype(dtype)
        return {key: _decode(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_decode(item) for item in value]
    return value


def _encode_python(state: tuple[Any, ...]) -> list[Any]:
    """``random.getstate()`` (version, 625 words, gauss_next) with the words as a tensor."""
    import torch

    version, words, gauss_next = state
    return [version, torch.from_numpy(np.fromiter(words, dtype=np.int64, count=len(words))), gauss_next]


def _decode_python(saved: list[Any]) -> tuple[Any, ...]:
    version, words, gauss_next = saved
    return version, tuple(words.tolist()), gauss_next
