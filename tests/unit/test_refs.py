"""Model names, aliases and references: the allow-lists and the one parser."""

from __future__ import annotations

import pytest

from mlplatform.errors import InvalidInput
from mlplatform.registry.refs import check_alias, check_name, parse_ref


@pytest.mark.parametrize("name", ["churn", "churn-model.v2_b", "0day", "a" * 128])
def test_allowed_names(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize(
    "name", ["", "Churn", "-churn", "churn\n", "../x", "a/b", "a b", "a" * 129, "churn-v3", "über"]
)
def test_names_outside_the_allow_list_are_refused_naming_the_field(name: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        check_name(name, field="model")
    assert refused.value.details == [{"field": "model", "problem": refused.value.details[0]["problem"]}]


@pytest.mark.parametrize("alias", ["champion\n", "Prod", "1st", "archived", "a" * 65])
def test_aliases_outside_the_allow_list_are_refused(alias: str) -> None:
    with pytest.raises(InvalidInput):
        check_alias(alias)


def test_every_reference_form_parses() -> None:
    assert parse_ref("churn").name == "churn"
    assert parse_ref("churn@champion").alias == "champion"
    assert parse_ref("churn-v3").version == 3
    assert parse_ref("churn/3").version == 3
    full = parse_ref("churn-v3-20261201120000")
    assert (full.name, full.version) == ("churn", 3)
