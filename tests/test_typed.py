"""Dataclasses from mappings: every error names the dotted key."""

from dataclasses import dataclass, field

import pytest

from cowest.errors import ConfigError
from cowest.typed import from_dict, set_dotted


@dataclass
class Inner:
    rate: float = 0.1
    names: list[str] = field(default_factory=list)


@dataclass
class Outer:
    n: int | None = None
    flag: bool = False
    inner: Inner = field(default_factory=Inner)


def test_values_are_coerced_as_the_command_line_writes_them():
    data = {}
    set_dotted(data, "inner.rate", "1e-4")
    set_dotted(data, "inner.names", "a, b")
    out = from_dict(Outer, data)
    assert out.inner.rate == 1e-4 and out.inner.names == ["a", "b"] and out.n is None


@pytest.mark.parametrize("data, message", [
    ({"inner": {"rte": 1}}, "unknown config key 'inner.rte'; valid keys under inner: names, rate"),
    ({"n": "x"}, "n: expected int or null, got 'x'"),
    ({"flag": "yes"}, "flag: expected true/false, got 'yes'"),
])
def test_errors_name_the_key(data, message):
    with pytest.raises(ConfigError) as e:
        from_dict(Outer, data)
    assert str(e.value) == message
