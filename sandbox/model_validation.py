"""Validate API requests against the botocore service model, the checks botocore itself skips.

botocore's client-side validation covers required members, types and minimum lengths only. An
emulator that should reject what AWS rejects also needs maximum lengths, patterns, enums and
numeric ranges, so emulated services never accept a request the real one would refuse.

    validate_request(service_model, "StartImagePipelineExecution", params)  # raises ValidationError

`validate_response` applies the same rules to what an emulator answers, so its responses are
proven to have the shape real clients parse.
"""

from __future__ import annotations

import datetime
import functools
import re
from collections.abc import Mapping
from typing import Any

from botocore.model import ServiceModel, Shape

__all__ = ["ValidationError", "validate_request", "validate_response"]

# Smithy patterns are ECMAScript regexes. Two constructs have no `re` spelling: a UTF-16 surrogate
# pair range (meaning "any supplementary character") has a direct translation; Unicode property
# classes (\p{L}) have none, so such patterns are not checked rather than checked wrongly.
_SURROGATE_PAIR_RANGE = r"\uD800\uDC00-\uDBFF\uDFFF"
_SUPPLEMENTARY_RANGE = r"\U00010000-\U0010FFFF"

_PYTHON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "long": (int,),
    "float": (float, int),
    "double": (float, int),
    "boolean": (bool,),
    "blob": (bytes, bytearray, str),
    "timestamp": (datetime.datetime, str, int, float),
    "structure": (Mapping,),
    "map": (Mapping,),
    "list": (list, tuple),
}


class ValidationError(ValueError):
    """A request the service would reject; the message names the member, the value and the rule."""


def validate_request(service_model: ServiceModel, operation_name: str, params: Mapping) -> None:
    """Raise ValidationError for the first member of `params` that breaks the operation's model."""
    input_shape = service_model.operation_model(operation_name).input_shape
    if input_shape is None:
        if params:
            raise ValidationError(f"{operation_name} takes no parameters, got {sorted(params)}")
        return
    _validate(input_shape, params, path=operation_name)


def validate_response(service_model: ServiceModel, operation_name: str, response: Mapping) -> None:
    """Raise ValidationError when an emulated response breaks the operation's output shape."""
    output_shape = service_model.operation_model(operation_name).output_shape
    members = {key: value for key, value in response.items() if key != "ResponseMetadata"}
    if output_shape is not None:
        _validate(output_shape, members, path=f"{operation_name} response")


def _validate(shape: Shape, value: Any, path: str) -> None:
    expected = _PYTHON_TYPES.get(shape.type_name)
    # bool is an int subclass: True is not a valid integer member.
    is_bool_as_number = isinstance(value, bool) and shape.type_name != "boolean"
    if expected and (not isinstance(value, expected) or is_bool_as_number):
        raise ValidationError(f"{path}: expected {shape.type_name}, got {type(value).__name__}")
    check = {
        "structure": _validate_structure,
        "list": _validate_list,
        "map": _validate_map,
        "string": _validate_string,
        "integer": _validate_number,
        "long": _validate_number,
        "float": _validate_number,
        "double": _validate_number,
    }.get(shape.type_name)
    if check:
        check(shape, value, path)


def _validate_structure(shape: Shape, value: Mapping, path: str) -> None:
    missing = [name for name in shape.required_members if value.get(name) is None]
    if missing:
        raise ValidationError(f"{path}: missing required member(s) {', '.join(missing)}")
    for name, member_value in value.items():
        if name not in shape.members:
            raise ValidationError(f"{path}: unknown member {name!r}")
        if member_value is not None:
            _validate(shape.members[name], member_value, f"{path}.{name}")


def _validate_list(shape: Shape, value: list, path: str) -> None:
    _check_length(shape, len(value), path, unit="items")
    for index, item in enumerate(value):
        _validate(shape.member, item, f"{path}[{index}]")


def _validate_map(shape: Shape, value: Mapping, path: str) -> None:
    _check_length(shape, len(value), path, unit="entries")
    for key, item in value.items():
        _validate(shape.key, key, f"{path} key {key!r}")
        _validate(shape.value, item, f"{path}[{key!r}]")


def _validate_string(shape: Shape, value: str, path: str) -> None:
    _check_length(shape, len(value), path, unit="characters")
    if shape.enum and value not in shape.enum:
        raise ValidationError(f"{path}: {value!r} is not one of {', '.join(shape.enum)}")
    pattern = _compiled(shape.metadata.get("pattern"))
    # Smithy patterns are not implicitly anchored: most spell out ^...$ themselves.
    if pattern is not None and not pattern.search(value):
        raise ValidationError(f"{path}: {value!r} does not match pattern {pattern.pattern}")


def _validate_number(shape: Shape, value: float, path: str) -> None:
    low, high = shape.metadata.get("min"), shape.metadata.get("max")
    if (low is not None and value < low) or (high is not None and value > high):
        raise ValidationError(f"{path}: {value} is outside the range {low}..{high}")


def _check_length(shape: Shape, length: int, path: str, unit: str) -> None:
    low, high = shape.metadata.get("min"), shape.metadata.get("max")
    if low is not None and length < low:
        raise ValidationError(f"{path}: {length} {unit}, at least {low} required")
    if high is not None and length > high:
        raise ValidationError(f"{path}: {length} {unit}, at most {high} allowed")


@functools.cache
def _compiled(pattern: str | None) -> re.Pattern | None:
    if pattern is None:
        return None
    try:
        return re.compile(pattern.replace(_SURROGATE_PAIR_RANGE, _SUPPLEMENTARY_RANGE))
    except re.error:
        return None
