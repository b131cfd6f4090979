"""The pretext configs under experiments/conf/pretext compose, build, and state the defaults in code."""

import inspect

import pytest

from pretexts import PRETEXTS, create_pretext
from shortcutlens.cli.common import compose

NAMES = ["exemplar", "relative_location", "jigsaw", "contrastive"]


@pytest.mark.parametrize("name", NAMES)
def test_config_builds_and_matches_the_code_defaults(name):
    cfg = compose([f"pretext={name}", "data=synthetic"])["pretext"]
    assert cfg.pop("name") == name
    defaults = {k: p.default for k, p in inspect.signature(PRETEXTS.get(name)).parameters.items()
                if p.default is not inspect.Parameter.empty}
    assert set(cfg) == set(defaults), "the YAML should list every setting of the task"
    for key, value in cfg.items():
        want = defaults[key]
        if isinstance(want, tuple):
            want = list(want)
        assert value == pytest.approx(want, rel=1e-4) if isinstance(want, float) else value == want, key
    create_pretext(name, num_features=16, **cfg)
