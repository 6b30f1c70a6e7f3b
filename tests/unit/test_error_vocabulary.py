"""One error vocabulary: service.errors.PROBLEM_CODES is the list of every code, docs/api.md documents each code
the API answers with (same status), and every code the source raises is in the table."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

from service.api.problems import PROBLEM_MEDIA_TYPE, PROBLEM_TYPE_BASE, problem_response
from service.errors import PROBLEM_CODES, DecodeError, Overloaded, TaggramError, Unauthorized

REPO_ROOT = Path(__file__).resolve().parents[2]
SERVICE = REPO_ROOT / "service"
DOCS_TABLE_HEADER = "| status | code | when |"


def documented_codes() -> dict[str, set[int]]:
    """docs/api.md's error table: code → the statuses it is documented with. A row may pair several statuses with
    as many codes (``404 / 405`` | ``not_found`` / ``method_not_allowed``), or give one status to several codes."""
    lines = (REPO_ROOT / "docs" / "api.md").read_text().splitlines()
    start = lines.index(DOCS_TABLE_HEADER) + 2  # past the header and its --- row
    documented: dict[str, set[int]] = {}
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        status_cell, code_cell = line.split("|")[1:3]
        statuses = [int(s) for s in status_cell.split("/")]
        codes = re.findall(r"`([a-z_]+)`", code_cell)
        assert len(statuses) in (1, len(codes)), line
        for i, code in enumerate(codes):
            documented.setdefault(code, set()).add(statuses[i if len(statuses) > 1 else 0])
    return documented


def raised_codes() -> dict[str, set[int | None]]:
    """Every code the source gives an error: a class's ``code = "..."``, and ``X(<status>, "<code>", ...)`` calls
    (DecodeError's form), with the status where the call gives one."""
    found: dict[str, set[int | None]] = {}
    for path in SERVICE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ClassDef):
                for statement in node.body:
                    if (
                        isinstance(statement, ast.Assign)
                        and len(statement.targets) == 1
                        and isinstance(statement.targets[0], ast.Name)
                        and statement.targets[0].id == "code"
                        and isinstance(statement.value, ast.Constant)
                    ):
                        found.setdefault(statement.value.value, set()).add(None)
            elif isinstance(node, ast.Call) and len(node.args) >= 2:
                status, code = node.args[:2]
                if (
                    isinstance(status, ast.Constant)
                    and type(status.value) is int
                    and isinstance(code, ast.Constant)
                    and isinstance(code.value, str)
                ):
                    found.setdefault(code.value, set()).add(status.value)
    return found


def test_every_answered_code_is_documented_with_its_status():
    documented = documented_codes()
    answered = {
        code: entry.status for code, entry in PROBLEM_CODES.items() if entry.served and entry.status is not None
    }
    assert {code: {status} for code, status in answered.items()} == {c: documented.get(c) for c in answered}
    assert set(documented) == set(answered), "docs/api.md documents a code the table does not have (or vice versa)"


def test_start_up_codes_are_not_answers():
    for code, entry in PROBLEM_CODES.items():
        if not entry.served:
            assert code not in documented_codes()
            assert issubclass(entry.error, TaggramError)


def test_every_code_raised_in_the_source_is_in_the_table_with_its_status():
    raised = raised_codes()
    assert set(raised) <= set(PROBLEM_CODES), set(raised) - set(PROBLEM_CODES)
    for code, statuses in raised.items():
        assert statuses - {None} <= {PROBLEM_CODES[code].status}, code


def test_every_code_in_the_table_is_raised_somewhere_and_names_its_class():
    raised = raised_codes()
    for code, entry in PROBLEM_CODES.items():
        assert code in raised, f"{code} is in the table but nothing raises it"
        if entry.error is not DecodeError:
            assert entry.error.code == code


def test_a_decode_error_whose_status_disagrees_with_the_table_is_refused_at_once():
    assert DecodeError(415, "undecodable_audio", "x").status == 415
    with pytest.raises(TypeError):
        DecodeError(422, "undecodable_audio", "x")
    with pytest.raises(TypeError):
        DecodeError(422, "overloaded", "not a decode code")


def test_problem_bodies_carry_type_title_status_detail_code_instance_and_headers():
    response = problem_response(Overloaded("queue full", retry_after_seconds=7), "/embed")
    assert response.status_code == 503 and response.media_type == PROBLEM_MEDIA_TYPE
    assert response.headers["retry-after"] == "7"
    assert json.loads(response.body) == {
        "type": PROBLEM_TYPE_BASE + "overloaded",
        "title": "Service Unavailable",
        "status": 503,
        "detail": "queue full",
        "code": "overloaded",
        "instance": "/embed",
    }
    unauthorized = problem_response(Unauthorized(), "/models")
    assert unauthorized.status_code == 401 and unauthorized.headers["www-authenticate"] == "Bearer"
