"""Every customer-side rule on small hand-made snapshots."""

from __future__ import annotations

import dataclasses

import pandas as pd

from reconcile.rules.compare import (
    CompareConfig,
    Comparison,
    compare_all,
    deleted_user_customer,
    duplicate_email,
    duplicate_link,
    duplicate_user_id,
    in_scope,
    missing_customer,
    missing_customer_ids,
    orphan_customer,
    stale_metadata,
    unlinked_user,
)
from reconcile.rules.findings import FINDING_COLUMNS, STRING_DTYPE, concat_findings
from reconcile.rules.snapshots import empty_customers, empty_users
from tests.compare.frames import CONFIG, SCOPED, cus, customers, keys, user, users


def _row(findings: pd.DataFrame, index: int = 0) -> dict[str, str]:
    return {str(k): str(v) for k, v in findings.iloc[index].to_dict().items()}


# --- scope ---------------------------------------------------------------------------------


def test_scope_by_metadata_or_by_explicit_link() -> None:
    snapshot = customers(
        cus("cus_prod", env="prod"),
        cus("cus_staging", env="staging"),
        cus("cus_none"),
        cus("cus_linked_staging", env="staging"),
    )
    local = users(user(1, customer_id="cus_linked_staging", deleted=True))
    mask = in_scope(snapshot, local, SCOPED)
    assert mask.tolist() == [True, False, False, True]
    assert in_scope(snapshot, local, CONFIG).all()


# --- duplicate_user_id ---------------------------------------------------------------------


def test_duplicate_user_id_one_row_per_group_oldest_first() -> None:
    snapshot = customers(
        cus("cus_c", created=300, user_id="7", email="c@x"),
        cus("cus_a", created=200, user_id="7", email="a@x"),
        cus("cus_b", created=100, user_id="7", email="b@x"),
        cus("cus_d", created=100, user_id="8"),
        cus("cus_e", created=100, user_id=""),
        cus("cus_f", created=100, user_id=""),
        cus("cus_g", created=100),
        cus("cus_h", created=100),
    )
    found = duplicate_user_id(snapshot, users(), CONFIG)
    assert len(found) == 1
    row = _row(found)
    assert row["kind"] == "duplicate_user_id"
    assert row["severity"] == "warning"
    assert row["customer_id"] == "cus_b"
    assert row["user_id"] == "7"
    assert row["related_ids"] == "cus_a;cus_c"
    assert row["suggested_action"] == "run dedupe"
    assert row["detail"].endswith(".")


def test_duplicate_user_id_breaks_created_ties_by_id() -> None:
    snapshot = customers(cus("cus_z", created=5, user_id="1"), cus("cus_y", created=5, user_id="1"))
    assert _row(duplicate_user_id(snapshot, users(), CONFIG))["customer_id"] == "cus_y"


def test_duplicate_user_id_ignores_out_of_scope_customers() -> None:
    snapshot = customers(
        cus("cus_a", user_id="1", env="prod"),
        cus("cus_b", user_id="1", env="staging"),
        cus("cus_c", user_id="2", env="prod"),
        cus("cus_d", user_id="2", env="staging"),
    )
    local = users(user(5, customer_id="cus_d"))  # the link brings cus_d into scope
    found = duplicate_user_id(snapshot, local, SCOPED)
    assert keys(found) == {("duplicate_user_id", "cus_c", "2", "")}
    assert len(duplicate_user_id(snapshot, local, CONFIG)) == 2


# --- duplicate_email -----------------------------------------------------------------------


def test_duplicate_email_matches_trimmed_and_case_insensitively() -> None:
    snapshot = customers(
        cus("cus_b", created=2, email="Ann@Example.com"),
        cus("cus_a", created=3, email="  ann@example.COM "),
        cus("cus_c", created=1, email="ANN@EXAMPLE.COM"),
        cus("cus_d", created=1, email="bob@example.com"),
        cus("cus_e", created=1, email=""),
        cus("cus_f", created=1, email=""),
        cus("cus_g", created=1),
        cus("cus_h", created=1),
    )
    found = duplicate_email(snapshot, users(), CONFIG)
    assert len(found) == 1
    row = _row(found)
    assert row["customer_id"] == "cus_c"
    assert row["email"] == "ANN@EXAMPLE.COM"
    assert row["related_ids"] == "cus_a;cus_b"
    assert row["user_id"] == ""
    # the detail is a sentence about the group, without the address itself
    assert "example" not in row["detail"].lower()


def test_duplicate_email_respects_scope() -> None:
    snapshot = customers(cus("cus_a", email="x@y", env="prod"), cus("cus_b", email="X@y"))
    assert duplicate_email(snapshot, users(), SCOPED).empty
    assert len(duplicate_email(snapshot, users(), CONFIG)) == 1


# --- duplicate_link ------------------------------------------------------------------------


def test_duplicate_link_counts_deleted_users_and_sorts_ids_as_strings() -> None:
    local = users(
        user(9, customer_id="cus_1"),
        user(10, customer_id="cus_1", deleted=True),
        user(100, customer_id="cus_1"),
        user(3, customer_id="cus_2"),
        user(4),
        user(5),
    )
    found = duplicate_link(customers(), local, CONFIG)
    assert len(found) == 1
    row = _row(found)
    assert (row["kind"], row["severity"]) == ("duplicate_link", "error")
    assert row["customer_id"] == "cus_1"
    assert row["user_id"] == "10"  # "10" < "100" < "9"
    assert row["related_ids"] == "100;9"


# --- orphan_customer -----------------------------------------------------------------------


def test_orphan_customer_matches_by_link_user_id_or_normalized_email() -> None:
    snapshot = customers(
        cus("cus_linked"),
        cus("cus_by_uid", user_id="2"),
        cus("cus_by_email", email=" Carol@X.org "),
        cus("cus_deleted_user", user_id="4"),
        cus("cus_orphan", user_id="99", email="nobody@x.org"),
        cus("cus_bare"),
    )
    local = users(
        user(1, customer_id="cus_linked"),
        user(2),
        user(3, email="carol@x.org"),
        user(4, deleted=True),
        user(5),  # no email: must not match customers without email
    )
    found = orphan_customer(snapshot, local, CONFIG)
    assert keys(found) == {
        ("orphan_customer", "cus_orphan", "", ""),
        ("orphan_customer", "cus_bare", "", ""),
    }


def test_out_of_scope_customers_are_not_orphans() -> None:
    snapshot = customers(cus("cus_a", env="staging"), cus("cus_b", env="prod"), cus("cus_c"))
    assert keys(orphan_customer(snapshot, users(), SCOPED)) == {
        ("orphan_customer", "cus_b", "", "")
    }


# --- missing_customer ----------------------------------------------------------------------


def test_missing_customer_ids_are_unique_sorted_and_skip_deleted_users() -> None:
    snapshot = customers(cus("cus_here", env="staging"))
    local = users(
        user(1, customer_id="cus_here"),  # out of scope but listed: not missing
        user(2, customer_id="cus_gone"),
        user(3, customer_id="cus_gone"),
        user(4, customer_id="cus_away", deleted=True),
        user(5, customer_id="cus_abc"),
        user(6),
    )
    assert missing_customer_ids(snapshot, local) == ["cus_abc", "cus_gone"]


def test_missing_customer_ids_are_exactly_the_missing_customer_findings() -> None:
    # Looked up before the snapshots are prepared, from the ids alone: the same users.
    snapshot = customers(cus("cus_here", env="staging"), cus("cus_there"))
    local = users(
        user(1, customer_id=" cus_here "),  # stripped: listed
        user(2, customer_id=" cus_gone "),
        user(3, customer_id=""),
        user(" ", customer_id="cus_no_user_id"),  # no user id: not a user
        user(4, customer_id="cus_away", deleted=True),
        user(5, customer_id="cus_abc", email="a@x", name="A", plan="pro"),
    )
    found = missing_customer(snapshot, local, SCOPED, {})
    assert missing_customer_ids(snapshot, local) == sorted(set(found["customer_id"]))
    assert missing_customer_ids(snapshot, local) == ["cus_abc", "cus_gone"]


def test_compare_all_is_the_comparison_in_two_steps() -> None:
    snapshot = customers(cus("cus_1", user_id="1", email="a@x"), cus("cus_2", user_id="1"))
    local = users(user(1, customer_id="cus_1", email="b@x"), user(2, customer_id="cus_9"))
    causes = {"cus_9": "deleted"}
    comparison = Comparison(snapshot, local, CONFIG)
    assert comparison.findings(causes).equals(compare_all(snapshot, local, CONFIG, causes))  # type: ignore[arg-type]
    # The rules but missing_customer are applied once; the causes arrive later.
    assert comparison.findings({}).equals(compare_all(snapshot, local, CONFIG, {}))


def test_missing_customer_explains_each_cause() -> None:
    snapshot = customers(cus("cus_here"))
    local = users(
        user(1, customer_id="cus_deleted"),
        user(2, customer_id="cus_live"),
        user(3, customer_id="cus_never"),
        user(4, customer_id="cus_unchecked"),
        user(5, customer_id="cus_here"),
        user(6, customer_id="cus_gdpr", deleted=True),
    )
    causes = {"cus_deleted": "deleted", "cus_live": "other_mode", "cus_never": "absent"}
    found = missing_customer(snapshot, local, SCOPED, causes)  # type: ignore[arg-type]
    rows = {r["user_id"]: r for r in found.to_dict("records")}
    assert set(rows) == {"1", "2", "3", "4"}
    assert all(r["severity"] == "error" and r["related_ids"] == "" for r in rows.values())
    assert rows["1"]["stripe_value"] == "deleted"
    assert "deleted" in rows["1"]["detail"]
    assert rows["2"]["stripe_value"] == "other_mode"
    assert "other mode (test vs live)" in rows["2"]["detail"]
    assert "STRIPE_SECRET_KEY" in rows["2"]["detail"]
    assert "does not exist" in rows["3"]["detail"]
    assert rows["4"]["stripe_value"] == ""
    assert "not looked up" in rows["4"]["detail"]
    assert rows["2"]["customer_id"] == "cus_live"


def test_missing_customer_of_the_other_mode_names_both_modes() -> None:
    local = users(user(2, customer_id="cus_live"))
    config = dataclasses.replace(SCOPED, key_mode="test")
    found = missing_customer(customers(), local, config, {"cus_live": "other_mode"})
    detail = found["detail"].iloc[0]
    assert "a live-mode customer while the key is a test-mode key" in detail
    assert "use a live-mode key" in found["suggested_action"].iloc[0]


# --- unlinked_user -------------------------------------------------------------------------


def test_unlinked_user_by_user_id_email_or_ambiguous() -> None:
    snapshot = customers(
        cus("cus_uid", user_id="1", env="prod"),
        cus("cus_mail", email="B@x.org", env="prod"),
        cus("cus_amb1", user_id="3", env="prod"),
        cus("cus_amb2", email="c@x.org", env="prod"),
        cus("cus_staging", user_id="4", email="d@x.org", env="staging"),
        cus("cus_for_deleted", user_id="5", env="prod"),
        cus("cus_for_linked", user_id="6", env="prod"),
    )
    local = users(
        user(1, email="a@x.org"),
        user(2, email=" b@X.org"),
        user(3, email="C@x.org"),
        user(4, email="d@x.org"),
        user(5, deleted=True),
        user(6, customer_id="cus_elsewhere"),
        user(7),
    )
    found = unlinked_user(snapshot, local, SCOPED)
    assert keys(found) == {
        ("unlinked_user", "cus_uid", "1", ""),
        ("unlinked_user", "cus_mail", "2", ""),
        ("unlinked_user", "", "3", ""),
    }
    rows = {r["user_id"]: r for r in found.to_dict("records")}
    assert rows["3"]["related_ids"] == "cus_amb1;cus_amb2"
    assert rows["3"]["suggested_action"] == "review manually"
    assert rows["1"]["related_ids"] == "cus_uid"
    assert rows["1"]["suggested_action"] == "run link-users"
    assert rows["2"]["email"] == " b@X.org"


def test_unlinked_user_counts_one_customer_matching_both_ways_once() -> None:
    snapshot = customers(cus("cus_1", user_id="1", email="a@x"))
    found = unlinked_user(snapshot, users(user(1, email="A@x")), CONFIG)
    assert keys(found) == {("unlinked_user", "cus_1", "1", "")}


# --- stale_metadata ------------------------------------------------------------------------


def test_stale_metadata_one_row_per_differing_field() -> None:
    snapshot = customers(
        cus("cus_1", user_id="1", plan="pro", email="a@x.org", name="Ann"),
        cus("cus_2", user_id="legacy-2", email="b@x.org", name="Bob"),
        cus("cus_3", email="new@x.org", name="Zoë Müller"),
        cus("cus_4", user_id="4", plan="", email=" D@X.ORG", name="Dee"),
    )
    local = users(
        user(1, customer_id="cus_1", plan="pro", email="A@x.org ", name=" Ann "),
        user(2, customer_id="cus_2", plan="team", email="b@x.org", name="Bob"),
        user(3, customer_id="cus_3", email="old@x.org", name="Zoe Muller"),
        user(4, customer_id="cus_4", plan=None, email="d@x.org", name="Dee"),
    )
    found = stale_metadata(snapshot, local, CONFIG)
    assert keys(found) == {
        ("stale_metadata", "cus_2", "2", "metadata.user_id"),
        ("stale_metadata", "cus_2", "2", "metadata.plan"),
        ("stale_metadata", "cus_3", "3", "metadata.user_id"),
        ("stale_metadata", "cus_3", "3", "email"),
        ("stale_metadata", "cus_3", "3", "name"),
    }
    rows = {(r["customer_id"], r["field"]): r for r in found.to_dict("records")}
    assert rows[("cus_2", "metadata.user_id")]["stripe_value"] == "legacy-2"
    assert rows[("cus_2", "metadata.user_id")]["local_value"] == "2"
    assert rows[("cus_2", "metadata.plan")]["stripe_value"] == ""
    assert rows[("cus_2", "metadata.plan")]["local_value"] == "team"
    assert rows[("cus_3", "email")]["stripe_value"] == "new@x.org"
    assert rows[("cus_3", "email")]["local_value"] == "old@x.org"
    # sync-metadata plans email and name changes only with their option set: the action says so.
    assert {field: r["suggested_action"] for (_cid, field), r in rows.items()} == {
        "metadata.user_id": "run sync-metadata",
        "metadata.plan": "run sync-metadata",
        "email": "run sync-metadata with [maintenance] sync_email = true",
        "name": "run sync-metadata with [maintenance] sync_name = true",
    }
    assert all(r["severity"] == "info" for r in rows.values())


def test_stale_metadata_skips_shared_deleted_and_unlisted_links() -> None:
    snapshot = customers(
        cus("cus_shared", user_id="x"),
        cus("cus_deleted_user", user_id="x"),
        cus("cus_staging", user_id="x", env="staging"),
    )
    local = users(
        user(1, customer_id="cus_shared"),
        user(2, customer_id="cus_shared", deleted=True),
        user(3, customer_id="cus_deleted_user", deleted=True),
        user(4, customer_id="cus_missing"),
        user(5, customer_id="cus_staging"),
    )
    found = stale_metadata(snapshot, local, SCOPED)
    # only the linked staging customer is in scope (through its link) and singly linked
    assert keys(found) == {("stale_metadata", "cus_staging", "5", "metadata.user_id")}


def test_stale_metadata_honours_compare_switches_and_user_id_key() -> None:
    snapshot = customers_with_uid_key()
    local = users(user(1, customer_id="cus_1", email="b@x", name="Other"))
    config = CompareConfig(
        user_id_metadata_key="plan", metadata_keys=(), compare_email=False, compare_name=False
    )
    assert stale_metadata(snapshot, local, config).empty
    config = CompareConfig(user_id_metadata_key="plan", metadata_keys=("plan",))
    assert keys(stale_metadata(snapshot, local, config)) == {
        ("stale_metadata", "cus_1", "1", "email"),
        ("stale_metadata", "cus_1", "1", "name"),
    }


def customers_with_uid_key() -> pd.DataFrame:
    # a deployment that keeps the user id under metadata.plan, to check the key is honoured
    return customers(cus("cus_1", plan="1", email="a@x", name="Ann"))


# --- deleted_user_customer -----------------------------------------------------------------


def test_deleted_user_customer_by_link_or_user_id_once_per_pair() -> None:
    snapshot = customers(
        cus("cus_linked", user_id="1", env="prod"),
        cus("cus_by_uid", user_id="2", env="prod"),
        cus("cus_staging", user_id="3", env="staging"),
        cus("cus_active", user_id="4", env="prod"),
    )
    local = users(
        user(1, customer_id="cus_linked", deleted=True),
        user(2, deleted=True),
        user(3, deleted=True),
        user(4, customer_id="cus_active"),
        user(5, customer_id="cus_gone", deleted=True),
    )
    found = deleted_user_customer(snapshot, local, SCOPED)
    assert keys(found) == {
        ("deleted_user_customer", "cus_linked", "1", ""),
        ("deleted_user_customer", "cus_by_uid", "2", ""),
    }
    assert set(found["suggested_action"]) == {"run gdpr-delete"}


# --- everything together -------------------------------------------------------------------


def test_compare_all_is_the_union_of_the_rules_in_contract_shape() -> None:
    snapshot = customers(
        cus("cus_1", created=1, user_id="1", email="a@x", env="prod"),
        cus("cus_2", created=2, user_id="1", email="A@x ", env="prod"),
        cus("cus_3", env="prod"),
        cus("cus_4", user_id="5", env="prod"),
    )
    local = users(
        user(1, customer_id="cus_1", email="a@x", plan="pro"),
        user(2, customer_id="cus_9"),
        user(3, customer_id="cus_3"),
        user(4, customer_id="cus_3"),
        user(5, deleted=True),
    )
    causes = {"cus_9": "absent"}
    everything = compare_all(snapshot, local, SCOPED, causes)  # type: ignore[arg-type]
    assert tuple(everything.columns) == FINDING_COLUMNS
    assert all(dtype == STRING_DTYPE for dtype in everything.dtypes)
    assert not everything.isna().any().any()
    rules = concat_findings(
        [
            duplicate_user_id(snapshot, local, SCOPED),
            duplicate_email(snapshot, local, SCOPED),
            duplicate_link(snapshot, local, SCOPED),
            orphan_customer(snapshot, local, SCOPED),
            missing_customer(snapshot, local, SCOPED, causes),  # type: ignore[arg-type]
            unlinked_user(snapshot, local, SCOPED),
            stale_metadata(snapshot, local, SCOPED),
            deleted_user_customer(snapshot, local, SCOPED),
        ]
    )
    assert everything.equals(rules)
    assert set(everything["kind"]) == {
        "duplicate_user_id",
        "duplicate_email",
        "duplicate_link",
        "missing_customer",
        "stale_metadata",
        "deleted_user_customer",
    }
    text = everything.to_csv(index=False)
    assert "None" not in text
    assert "<NA>" not in text


def test_na_everywhere_and_empty_snapshots() -> None:
    snapshot = customers(cus("cus_1"), cus("cus_2"))
    local = users(user(1), user(2), user(3, customer_id=""))
    found = compare_all(snapshot, local, CONFIG, {})
    assert keys(found) == {
        ("orphan_customer", "cus_1", "", ""),
        ("orphan_customer", "cus_2", "", ""),
    }
    scoped = compare_all(snapshot, local, SCOPED, {})
    assert scoped.empty
    nothing = compare_all(empty_customers(("user_id", "plan")), empty_users(("plan",)), CONFIG, {})
    assert nothing.empty
    assert tuple(nothing.columns) == FINDING_COLUMNS
