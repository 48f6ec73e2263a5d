import pytest

from bettersynth.core.registry import Registry


class Base:
    pass


def test_unknown_name_suggests_closest():
    registry: Registry[type[Base]] = Registry("operator", base=Base)

    @registry.register("words_num_filter")
    class Words(Base):
        pass

    assert registry.get("words_num_filter") is Words
    with pytest.raises(ValueError, match="did you mean 'words_num_filter'"):
        registry.get("words_num_filtr")


def test_registration_checks_base_and_duplicates():
    registry: Registry[type[Base]] = Registry("soup", base=Base)
    with pytest.raises(TypeError, match="must subclass Base"):
        registry.register("bad")(int)

    registry.register("uniform")(type("Uniform", (Base,), {}))
    with pytest.raises(ValueError, match="already registered"):
        registry.register("uniform")(type("Other", (Base,), {}))
