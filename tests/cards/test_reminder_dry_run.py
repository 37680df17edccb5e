"""A dry run counts the reminder emails and renders one: the same count as rendering all."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import jinja2
import pandas as pd
import pytest

from jobs.reminders import (
    ReminderTemplates,
    load_templates,
    reminder_email_count,
    reminder_messages,
)
from reconcile.settings import CardExpirySettings
from tests.cards.test_reminder_messages import _due


@dataclass(frozen=True)
class CountingTemplates(ReminderTemplates):
    rendered: list[str] = field(default_factory=list)

    def render(self, name: str | None, email: str, cards: list[dict[str, Any]]) -> tuple[str, str]:
        self.rendered.append(email)
        return super().render(name, email, cards)


def _counting(templates: ReminderTemplates) -> CountingTemplates:
    return CountingTemplates(templates.subject, templates.body)


DUE = _due(
    ("cus_b", "bo@example.com", None, "pm_b_1111", 3),
    ("cus_a", "ada@example.com", "Ada", "pm_a_2222", 3),
    ("cus_a", "ada@example.com", None, "pm_a_3333", 4),
    ("cus_a", "other@example.com", None, "pm_a_4444", 4),  # one customer, two addresses
    ("cus_c", None, "No Address", "pm_c_5555", 3),  # nobody to write to
    (None, "nobody@example.com", None, "pm_x_6666", 3),  # type: ignore[arg-type]
)


def test_the_count_is_the_number_of_messages_and_only_the_first_is_rendered() -> None:
    templates = load_templates(CardExpirySettings())
    counting = _counting(templates)

    count = reminder_email_count(DUE, counting)

    assert count == len(reminder_messages(DUE, templates, "billing@example.com")) == 3
    assert counting.rendered == ["ada@example.com"]  # the first by customer id, then email


def test_nothing_due_counts_zero_and_renders_nothing() -> None:
    counting = _counting(load_templates(CardExpirySettings()))

    assert reminder_email_count(DUE.iloc[0:0], counting) == 0
    assert counting.rendered == []


def test_a_template_that_fails_on_real_data_still_fails_the_count(tmp_path: Any) -> None:
    # The shipped sample has a name; a customer without one breaks this template.
    template = tmp_path / "reminder.txt.j2"
    template.write_text("Hello {{ name.title() }}, card {{ card.last4 }}\n", encoding="utf-8")
    templates = load_templates(CardExpirySettings(reminder_template=template))
    nameless = _due(("cus_b", "bo@example.com", None, "pm_b_1111", 3))

    with pytest.raises(jinja2.UndefinedError):
        reminder_email_count(nameless, templates)
    with_name = nameless.assign(name=pd.array(["Bo"], dtype="string"))
    assert reminder_email_count(with_name, templates) == 1
