"""Form decoding with Stripe's bracket notation and the schema checks."""

from __future__ import annotations

import pytest

from sandbox.apierrors import ApiError
from sandbox.params import parse_form, validate


def test_brackets_nest_and_both_list_forms_decode() -> None:
    parsed = parse_form(
        [
            ("metadata[plan]", "pro"),
            ("created[lt]", "10"),
            ("expand[]", "a"),
            ("expand[]", "b"),
            ("card[number]", "4242"),
        ]
    )
    assert parsed == {
        "metadata": {"plan": "pro"},
        "created": {"lt": "10"},
        "expand": {"0": "a", "1": "b"},
        "card": {"number": "4242"},
    }
    indexed = parse_form([("expand[0]", "a"), ("expand[1]", "b")])
    spec = {"expand": "list"}
    assert validate(indexed, spec) == validate(
        parse_form([("expand[]", "a"), ("expand[]", "b")]), spec
    )
    assert validate(indexed, spec) == {"expand": ["a", "b"]}


def test_metadata_keys_keep_their_brackets_for_the_rules_to_refuse() -> None:
    assert parse_form([("metadata[a[b]", "v")]) == {"metadata": {"a[b": "v"}}
    assert parse_form([("metadata[a]b]", "v")]) == {"metadata": {"a]b": "v"}}


def test_types_are_checked() -> None:
    spec = {"limit": "int", "created": "range", "metadata": "map"}
    assert validate({"limit": "5", "created": {"gte": "1", "lt": "9"}}, spec) == {
        "limit": 5,
        "created": {"gte": 1, "lt": 9},
    }
    assert validate({"created": "7", "metadata": ""}, spec) == {"created": 7, "metadata": ""}
    for bad in ({"limit": "five"}, {"created": {"between": "1"}}, {"limit": {"a": "1"}}):
        with pytest.raises(ApiError) as error:
            validate(bad, spec)
        assert error.value.status == 400


def test_a_value_and_an_object_under_one_name_is_refused() -> None:
    with pytest.raises(ApiError):
        parse_form([("card", "x"), ("card[number]", "4242")])
