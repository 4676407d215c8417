"""The default cost model and default-schedule picker are the ones the README names (issue #22), in the config and
on the command line alike."""

import re
from pathlib import Path

from kdcompile.tune import TuneConfig

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def test_the_readme_names_the_default_cost_model_and_picker():
    named = re.search(r"The default cost model is `([\w-]+)` and the default picker is\s+`([\w-]+)`", README)
    assert named, "the README no longer says which cost model and picker are the defaults"
    assert (TuneConfig().cost_model, TuneConfig().defaults) == named.groups()
    from kdcompile.cli import CostOpt, DefaultsOpt

    assert (CostOpt.default, DefaultsOpt.default) == named.groups()
