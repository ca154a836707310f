"""env.example and the README's variable table are generated from the schema and must match it."""
from __future__ import annotations

from pathlib import Path

from entrypoint import docs
from entrypoint.catalog import sections
from entrypoint.schema import env_names

ROOT = Path(__file__).resolve().parent.parent


def test_env_example_is_in_sync_with_the_schema():
    assert (ROOT / "env.example").read_text() == docs.env_example(), "run `make env-example` and commit"


def test_readme_variable_table_is_in_sync_with_the_schema():
    readme = (ROOT / "README.md").read_text()
    assert docs.with_readme_table(readme) == readme, "run `make env-example` and commit"


def test_every_variable_is_documented():
    for _, cls in sections():
        for fname, info in cls.model_fields.items():
            assert info.description, f"{env_names(fname, info)[0]} has no description"
            assert env_names(fname, info)[0] in docs.env_example()
