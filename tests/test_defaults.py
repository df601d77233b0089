"""One default per setting: the likelihood classes, the Pyro distributions and posterior()
share them, and the docs state them as the code has them."""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import pytest

from diffinfer import DiffusionLikelihood, posterior
from diffinfer.likelihoods.distributions import DiffusionField
from diffinfer.likelihoods.terms import DEFAULT_CV_TIMESTEPS, DEFAULT_TERMS, DEFAULT_VLB_TIMESTEPS

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _defaults(func) -> dict:
    return {name: p.default for name, p in inspect.signature(func).parameters.items()
            if p.default is not inspect.Parameter.empty}  # fmt: skip


def test_the_diffusion_likelihoods_share_their_defaults():
    like, field, post = (
        _defaults(DiffusionLikelihood),
        _defaults(DiffusionField),
        _defaults(posterior),
    )
    assert like["terms"] == field["terms"] == post["likelihood"] == DEFAULT_TERMS == "vlb"
    assert like["n_timesteps"] == field["n_timesteps"] == "auto"
    assert like["precision"] == field["precision"] == "auto"
    assert like["n_noise"] == field["n_noise"] == 1 and like["seed"] == field["seed"] == 0
    assert (DEFAULT_CV_TIMESTEPS, DEFAULT_VLB_TIMESTEPS) == (8, 16)


@pytest.mark.parametrize("name, func", [("DiffusionLikelihood", DiffusionLikelihood),
                                        ("DiffusionField", DiffusionField)])  # fmt: skip
def test_the_docs_state_the_signatures_as_the_code_has_them(name, func):
    """Every `Name(arg, key=value, ...)` written in the docs gives each key the code's
    default."""
    defaults = _defaults(func)
    found = 0
    for doc in DOCS:
        text = doc.read_text()
        for m in re.finditer(rf"`{name}\(([^`]*)\)`", text):
            found += 1
            call = ast.parse(f"f({m.group(1)})", mode="eval").body
            for kw in call.keywords:
                assert kw.arg in defaults, f"{doc.name}: {name} has no option {kw.arg}"
                if isinstance(kw.value, ast.Constant):
                    assert kw.value.value == defaults[kw.arg], (
                        f"{doc.name}: {name}({kw.arg}={kw.value.value!r}) but the code's "
                        f"default is {defaults[kw.arg]!r}"
                    )
    assert found, f"no signature of {name} in the docs"


def test_no_doc_names_a_default_the_code_does_not_have():
    for doc in DOCS:
        text = doc.read_text()
        assert "VLB-16" not in text, f"{doc.name} names VLB-16 (the default is 8 timesteps)"
