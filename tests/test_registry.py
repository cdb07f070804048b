"""Named registries: registration, lookup errors that list the known names, no double entries."""

import pytest

from latentwire.registry import Registry


def test_register_and_get():
    reg: Registry = Registry("encoder")

    @reg.register("mlp")
    def mlp():
        return "mlp"

    reg.register("byte")(len)
    assert reg.get("mlp") is mlp
    assert reg.get("byte") is len
    assert reg.names() == ["byte", "mlp"]
    assert "mlp" in reg and "gru" not in reg


def test_unknown_name_lists_the_known_ones():
    reg: Registry = Registry("injector")
    reg.register("embeds")(object)
    reg.register("deep_prefix")(object)
    with pytest.raises(KeyError, match=r"unknown injector 'prefix'; known: deep_prefix, embeds"):
        reg.get("prefix")


def test_registering_a_name_twice_is_an_error():
    reg: Registry = Registry("metric")
    reg.register("f1")(str)
    with pytest.raises(KeyError, match="metric 'f1' is registered twice"):
        reg.register("f1")(repr)
    assert reg.get("f1") is str
