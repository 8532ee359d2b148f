import pytest

from tapweight import plugins


@pytest.fixture
def toy():
    """Register the toy plugin for one test, unregister it afterwards."""
    from tests import toy_plugin

    assert plugins.register_plugin(toy_plugin, "toy")
    yield toy_plugin
    plugins.pm.unregister(name="toy")
