"""Encoder configuration: named presets, overrides, and validation with errors that name the key.

Every encoder constructor takes ``preset`` plus keyword arguments that default to ``None``. The resolved value of a
key is the explicitly given value if it is not ``None``, else the preset's value, else the encoder's base default:

    config = resolve_config("squeezeformer", PRESETS, DEFAULTS, preset, given, constructor_types(SqueezeformerEncoder))

The type of every key is checked against the constructor's annotation of that key (:func:`check_types`), so a YAML
value of the wrong type (``cnn_module_kernel: 3.0``, ``"15"``, ``input_size: 80.0``) fails with a message naming the
key and the expected type before any value check runs; adding a key with an annotation is all it takes.
"""

import collections.abc
import types
import typing
from typing import Any, Dict, Iterable, Mapping, Optional, Sequence, Union


def resolve_config(
    encoder: str,
    presets: Mapping[str, Mapping[str, Any]],
    defaults: Mapping[str, Any],
    preset: Optional[str],
    given: Mapping[str, Any],
    key_types: Mapping[str, Any],
) -> dict:
    """Merge base defaults < preset < explicitly given (non-None) values, and check every value's type.

    Args:
        encoder: the encoder's registered name, for messages.
        presets: ``{preset_name: {key: value}}``; preset names are matched case-insensitively.
        defaults: every configurable key with its base default.
        preset: a preset name or None.
        given: the constructor's keyword arguments; ``None`` means "not given".
        key_types: ``{key: annotation}``, normally :func:`constructor_types` of the encoder class.

    Raises:
        ValueError: unknown preset, a preset/given key that ``defaults`` does not know, or a value of the wrong type.
    """
    check_types(encoder, {"preset": preset}, key_types)
    config = dict(defaults)
    if preset is not None:
        key = str(preset).lower()
        if key not in presets:
            raise ValueError(f"{encoder}: unknown preset {preset!r}; valid presets: {', '.join(presets)}")
        unknown = set(presets[key]) - set(defaults)
        if unknown:  # a programming error in the preset table, caught by the tests
            raise ValueError(f"{encoder}: preset {key!r} sets unknown keys {sorted(unknown)}")
        config.update(presets[key])
    for name, value in given.items():
        if name not in defaults:
            reject_unknown(encoder, {name: value}, defaults)
        if value is not None:
            config[name] = value
    check_types(encoder, config, key_types)
    return config


def constructor_types(cls: type) -> Dict[str, Any]:
    """``{argument: annotation}`` of ``cls.__init__`` and of every base class's ``__init__`` (subclasses win)."""
    annotations: Dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        if "__init__" in vars(klass) and klass is not object:
            annotations.update(typing.get_type_hints(klass.__init__))
    annotations.pop("return", None)
    return annotations


def check_types(encoder: str, values: Mapping[str, Any], key_types: Mapping[str, Any]) -> None:
    """Raise a ValueError naming the first key whose value does not have the annotated type.

    Understood annotations: ``int`` (not bool), ``float`` (int or float, not bool), ``bool``, ``str``, ``None``,
    ``Optional``/``Union``, ``List[X]``/``Sequence[X]``/``Tuple[X, ...]`` (a list or tuple of X, not a string),
    ``Dict``/``Mapping`` and plain classes; anything else (``Any``) accepts every value. Keys without an annotation are
    not checked.
    """
    for key, value in values.items():
        annotation = key_types.get(key, Any)
        if not _has_type(value, annotation):
            raise ValueError(
                f"{encoder}: {key} must be {_describe(annotation)}, got {value!r} ({type(value).__name__})"
            )


def _arms(annotation: Any) -> tuple:
    """The alternatives of a Union (``Optional[X]``, ``X | Y``), or ``(annotation,)``."""
    if typing.get_origin(annotation) in (Union, getattr(types, "UnionType", Union)):
        return typing.get_args(annotation)
    return (annotation,)


def _has_type(value: Any, annotation: Any) -> bool:
    arms = _arms(annotation)
    if len(arms) > 1:
        return any(_has_type(value, arm) for arm in arms)
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is Any:
        return True
    if annotation is type(None):
        return value is None
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if origin in (list, tuple, collections.abc.Sequence) or annotation in (list, tuple):
        element = args[0] if args else Any
        return isinstance(value, (list, tuple)) and all(_has_type(item, element) for item in value)
    if origin in (dict, collections.abc.Mapping):
        return isinstance(value, collections.abc.Mapping)
    return isinstance(value, annotation) if isinstance(annotation, type) else True


_NAMES = {int: ("an int", "ints"), float: ("a number", "numbers"), bool: ("true or false", "booleans"),
          str: ("a string", "strings")}


def _describe(annotation: Any, plural: bool = False) -> str:
    """``Optional[Union[int, Sequence[int]]]`` -> "an int or a list of ints" (None is "not given": left out)."""
    arms = [arm for arm in _arms(annotation) if arm is not type(None)]
    if len(arms) > 1:
        return " or ".join(_describe(arm, plural) for arm in arms)
    annotation = arms[0] if arms else type(None)
    if annotation in _NAMES:
        return _NAMES[annotation][plural]
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (list, tuple, collections.abc.Sequence) or annotation in (list, tuple):
        inner = _describe(args[0], plural=True) if args else "values"
        return f"lists of {inner}" if plural else f"a list of {inner}"
    if origin in (dict, collections.abc.Mapping):
        return "mappings" if plural else "a mapping"
    return getattr(annotation, "__name__", str(annotation))


def reject_unknown(encoder: str, unknown: Mapping[str, Any], valid: Iterable[str]) -> None:
    """Raise a ValueError naming unknown configuration keys (for a constructor's ``**kwargs`` catch-all)."""
    if unknown:
        raise ValueError(
            f"{encoder}: unknown configuration key(s) {', '.join(sorted(unknown))}; valid keys: "
            + ", ".join(sorted(valid))
        )


def require_positive(encoder: str, key: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{encoder}: {key} must be > 0, got {value!r}")


def require_probability(encoder: str, key: str, value: float) -> None:
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{encoder}: {key} must be in [0, 1), got {value!r}")


def require_choice(encoder: str, key: str, value: Any, choices: Sequence[Any]) -> None:
    if value not in choices:
        raise ValueError(f"{encoder}: {key} must be one of {list(choices)}, got {value!r}")


def require_divisible(encoder: str, key: str, value: int, divisor_key: str, divisor: int) -> None:
    if divisor <= 0 or value % divisor != 0:
        raise ValueError(f"{encoder}: {key}={value} must be divisible by {divisor_key}={divisor}")


def require_odd(encoder: str, key: str, value: int) -> None:
    if value % 2 != 1:
        raise ValueError(f"{encoder}: {key} must be odd (a centred 'same' convolution), got {value}")


def require_length(encoder: str, key: str, values: Sequence[Any], length: int, length_key: str) -> None:
    if len(values) != length:
        raise ValueError(f"{encoder}: {key} has {len(values)} entries but {length_key} needs {length}")
