import pytest

from tapweight.plugin import manager as plugins


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    """TAPWEIGHT_CACHE_DIR for the whole session: images and tokenizers are made once."""
    path = tmp_path_factory.mktemp("tapweight-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TAPWEIGHT_CACHE_DIR", str(path))
        yield path


@pytest.fixture
def toy():
    """Register the toy plugin for one test, unregister it afterwards."""
    from tests import toy_plugin

    assert plugins.register_plugin(toy_plugin, "toy")
    yield toy_plugin
    plugins.pm.unregister(name="toy")
