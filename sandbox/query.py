"""A subset of Stripe's search query language for customers, parsed and evaluated.

Grammar: `clause ((AND|OR) clause)*`, not mixing AND with OR; a clause is
`[-]field op value` with fields `email`, `name`, `phone`, `metadata["key"]` and `created`.
String values are double-quoted with `\\"` and `\\\\` escapes; `:` matches, `~` is a
substring match (3+ characters); `created` takes `:`, `>`, `>=`, `<`, `<=` and an integer.
Matching is case-insensitive: `email` and `metadata` values must be equal, `name` and `phone`
must contain the query's words in order.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from sandbox.store import CustomerRecord, ModeStore

__all__ = ["Clause", "Query", "QueryError", "parse_query", "run_query"]

_STRING_FIELDS = ("email", "name", "phone")
_WORD = re.compile(r"\w+", re.UNICODE)


class QueryError(ValueError):
    """A malformed query; the message names the position and what was expected."""


@dataclass(frozen=True, slots=True)
class Clause:
    field: str  # email, name, phone, metadata, created
    operator: str  # ':', '~', '>', '>=', '<', '<='
    value: str | int
    negated: bool = False
    metadata_key: str | None = None


@dataclass(frozen=True, slots=True)
class Query:
    clauses: tuple[Clause, ...]
    conjunction: str  # "AND" or "OR"; a single clause is "AND"


class _Reader:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def fail(self, expected: str) -> QueryError:
        found = self.text[self.pos : self.pos + 10] or "end of query"
        return QueryError(
            f"Invalid search query at character {self.pos}: expected {expected}, "
            f'found {found!r} (example: email:"jenny@example.com" AND metadata["plan"]:"pro")'
        )

    def skip_spaces(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def at_end(self) -> bool:
        self.skip_spaces()
        return self.pos >= len(self.text)

    def take(self, token: str) -> bool:
        if self.text.startswith(token, self.pos):
            self.pos += len(token)
            return True
        return False

    def quoted(self) -> str:
        if not self.take('"'):
            raise self.fail("a double-quoted value")
        chars: list[str] = []
        while self.pos < len(self.text):
            char = self.text[self.pos]
            if char == "\\":
                if self.pos + 1 >= len(self.text):
                    break
                chars.append(self.text[self.pos + 1])
                self.pos += 2
                continue
            if char == '"':
                self.pos += 1
                return "".join(chars)
            chars.append(char)
            self.pos += 1
        raise QueryError("Invalid search query: a quoted value is not closed with '\"'")

    def word(self) -> str:
        start = self.pos
        while self.pos < len(self.text) and (
            self.text[self.pos].isalnum() or self.text[self.pos] == "_"
        ):
            self.pos += 1
        return self.text[start : self.pos]


def _clause(reader: _Reader) -> Clause:
    reader.skip_spaces()
    negated = reader.take("-")
    field = reader.word()
    metadata_key: str | None = None
    if field == "metadata":
        if not reader.take("["):
            raise reader.fail('metadata["key"]')
        metadata_key = reader.quoted()
        if not reader.take("]"):
            raise reader.fail("']' after the metadata key")
    elif field not in (*_STRING_FIELDS, "created"):
        raise reader.fail('a field: email, name, phone, metadata["key"] or created')
    if field == "created":
        for operator in (">=", "<=", ">", "<", ":"):
            if reader.take(operator):
                break
        else:
            raise reader.fail("an operator (:, >, >=, <, <=) after created")
        sign = "-" if reader.take("-") else ""
        digits = reader.word()
        if not digits.isdigit():
            raise reader.fail("an integer timestamp for created")
        return Clause("created", operator, int(sign + digits), negated)
    if reader.take(":"):
        operator = ":"
    elif reader.take("~"):
        operator = "~"
    else:
        raise reader.fail(f"':' or '~' after {field}")
    value = reader.quoted()
    if operator == "~" and len(value) < 3:
        raise QueryError(
            f"Invalid search query: a substring match (~) on {field} needs at least 3 characters"
        )
    return Clause(field, operator, value, negated, metadata_key)


def parse_query(text: str) -> Query:
    """Parse or raise QueryError naming the position; AND and OR cannot be mixed."""
    reader = _Reader(text)
    if reader.at_end():
        raise QueryError("Invalid search query: the query is empty")
    clauses = [_clause(reader)]
    conjunction: str | None = None
    while not reader.at_end():
        start = reader.pos
        word = reader.word()
        if word not in ("AND", "OR") or not reader.text[reader.pos : reader.pos + 1].isspace():
            reader.pos = start
            raise reader.fail("AND or OR between clauses")
        if conjunction is not None and word != conjunction:
            raise QueryError("Invalid search query: AND and OR cannot be mixed in one query")
        conjunction = word
        clauses.append(_clause(reader))
    return Query(tuple(clauses), conjunction or "AND")


def _words(value: str) -> list[str]:
    return _WORD.findall(value.lower())


def _contains_run(haystack: list[str], needle: list[str]) -> bool:
    if not needle:
        return False
    width = len(needle)
    return any(haystack[i : i + width] == needle for i in range(len(haystack) - width + 1))


def _predicate(clause: Clause) -> Callable[[CustomerRecord], bool]:
    if clause.field == "created":
        bound = int(clause.value)
        compare: dict[str, Callable[[int], bool]] = {
            ":": lambda c: c == bound,
            ">": lambda c: c > bound,
            ">=": lambda c: c >= bound,
            "<": lambda c: c < bound,
            "<=": lambda c: c <= bound,
        }
        test = compare[clause.operator]
        matches: Callable[[CustomerRecord], bool] = lambda r: test(r.created)  # noqa: E731
    else:
        wanted = str(clause.value).lower()
        wanted_words = _words(wanted)

        def field_value(record: CustomerRecord) -> str | None:
            if clause.field == "metadata":
                return record.metadata.get(clause.metadata_key or "")
            value: str | None = getattr(record, clause.field)
            return value

        def matches(record: CustomerRecord) -> bool:
            value = field_value(record)
            if value is None:
                return False
            lowered = value.lower()
            if clause.operator == "~":
                return wanted in lowered
            if clause.field in ("email", "metadata"):
                return lowered == wanted
            return _contains_run(_words(lowered), wanted_words)

    if clause.negated:
        return lambda record: not matches(record)
    return matches


def _candidates(clause: Clause, store: ModeStore) -> list[CustomerRecord] | None:
    """Records from an index that include every match of the clause; None: needs a scan."""
    if clause.negated or clause.operator != ":":
        return None
    if clause.field == "email":
        return store.by_email_ci(str(clause.value))
    if clause.field == "metadata":
        return store.by_metadata_ci(clause.metadata_key or "", str(clause.value))
    return None


def run_query(query: Query, store: ModeStore) -> list[CustomerRecord]:
    """Every live matching customer, newest first."""
    predicates = [_predicate(clause) for clause in query.clauses]
    candidate_sets = [_candidates(clause, store) for clause in query.clauses]
    pool: Iterable[CustomerRecord]
    if query.conjunction == "AND":
        indexed: list[list[CustomerRecord]] = [c for c in candidate_sets if c is not None]
        smallest: list[CustomerRecord] | None = min(indexed, key=len) if indexed else None
        pool = smallest if smallest is not None else store.newest_first()
        found = [r for r in pool if all(p(r) for p in predicates)]
    elif all(c is not None for c in candidate_sets):
        unique: dict[str, CustomerRecord] = {}
        for candidates in candidate_sets:
            for record in candidates or ():
                unique[record.id] = record
        found = [r for r in unique.values() if any(p(r) for p in predicates)]
    else:
        found = [r for r in store.newest_first() if any(p(r) for p in predicates)]
    found = [r for r in found if not r.deleted]
    found.sort(key=lambda r: -r.key)
    return found
