"""Encoder configuration: named presets, overrides, and validation with errors that name the key.

Every encoder constructor takes ``preset`` plus keyword arguments that default to ``None``. The resolved value of a
key is the explicitly given value if it is not ``None``, else the preset's value, else the encoder's base default:

    config = resolve_config("squeezeformer", PRESETS, DEFAULTS, preset, given)
"""

from typing import Any, Iterable, Mapping, Optional, Sequence


def resolve_config(
    encoder: str,
    presets: Mapping[str, Mapping[str, Any]],
    defaults: Mapping[str, Any],
    preset: Optional[str],
    given: Mapping[str, Any],
) -> dict:
    """Merge base defaults < preset < explicitly given (non-None) values.

    Args:
        encoder: the encoder's registered name, for messages.
        presets: ``{preset_name: {key: value}}``; preset names are matched case-insensitively.
        defaults: every configurable key with its base default.
        preset: a preset name or None.
        given: the constructor's keyword arguments; ``None`` means "not given".

    Raises:
        ValueError: unknown preset, or a preset/given key that ``defaults`` does not know.
    """
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
    return config


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
