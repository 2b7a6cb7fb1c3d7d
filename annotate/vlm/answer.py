"""The VLM's structured answer: its JSON schema, and a tolerant reader that is strict on content.

Model output is data: it is only ever handed to ``json`` (never eval/exec), and an answer is accepted
only when it matches the schema exactly, so ``vlm_json`` columns hold nothing but valid answers.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

ACTIONS = ("continue", "slow_down", "stop", "yield")
DESCRIPTION_MAX_CHARS = 300
#: The description: one line of 1 to DESCRIPTION_MAX_CHARS characters, no control characters, starting with a
#: visible one. A pattern rather than ``minLength``/``maxLength``: grammar engines (xgrammar, which vLLM uses too)
#: let a length-bounded string hold raw control characters, which JSON forbids, and ignore the lengths beside a pattern.
DESCRIPTION_PATTERN = "^[^\\x00-\\x20][^\\x00-\\x1f]{0,%d}$" % (DESCRIPTION_MAX_CHARS - 1)
#: Longest model text searched for an answer: bounds the parser's work on runaway generations.
MAX_TEXT_CHARS = 20_000

ANSWER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "hazard": {"type": "boolean"},
        "risk": {"type": "number", "minimum": 0, "maximum": 1},
        "description": {"type": "string", "pattern": DESCRIPTION_PATTERN},
        "action": {"type": "string", "enum": list(ACTIONS)},
    },
    "required": ["hazard", "risk", "description", "action"],
    "additionalProperties": False,
}
ANSWER_SCHEMA_NAME = "hazard_assessment"


@dataclass(frozen=True)
class VlmAnswer:
    """One window's outcome.

    ``answer_json`` is the validated answer re-serialised canonically (``None`` unless ``ok``); ``raw`` is
    the last text the model returned (``None`` when no text came back at all). ``error`` says why the
    answer is not ok. ``transient`` marks failures of the transport (server down, timeouts), not of
    the model: such answers must not be cached, a rerun should ask again.
    """

    ok: bool
    description: str | None
    answer_json: str | None
    raw: str | None
    attempts: int
    error: str | None = None
    transient: bool = False


def check_answer(text: str) -> tuple[dict[str, Any] | None, str | None]:
    """``(answer, None)`` for the first schema-valid JSON object in ``text``, else ``(None, why)``.

    Tolerates code fences and text around the object; the first error seen is reported.
    """
    if not isinstance(text, str):
        return None, f"expected text, got {type(text).__name__}"
    text = text[:MAX_TEXT_CHARS]
    decoder = json.JSONDecoder(parse_constant=_reject_constant)
    first_error: str | None = None
    start = text.find("{")
    while start != -1:
        try:
            value, end = decoder.raw_decode(text, start)
        except (ValueError, RecursionError):
            start = text.find("{", start + 1)
            continue
        error = validate_answer(value)
        if error is None:
            return value, None
        first_error = first_error or error
        start = text.find("{", end)
    return None, first_error or "no JSON object in the answer"


def validate_answer(value: Any) -> str | None:
    """Why ``value`` is not a valid answer, or ``None`` when it is."""
    if not isinstance(value, dict):
        return f"answer must be a JSON object, got {type(value).__name__}"
    keys = set(value)
    expected = set(ANSWER_SCHEMA["required"])
    if keys != expected:
        missing, extra = sorted(expected - keys), sorted(keys - expected)
        return f"answer keys: missing {missing}, unexpected {extra}"
    if not isinstance(value["hazard"], bool):
        return "hazard must be true or false"
    risk = value["risk"]
    if isinstance(risk, bool) or not isinstance(risk, (int, float)) or not math.isfinite(risk):
        return "risk must be a number"
    if not 0.0 <= risk <= 1.0:
        return f"risk must be within 0..1, got {risk}"
    description = value["description"]
    if not isinstance(description, str) or not description.strip():
        return "description must be a non-empty string"
    if len(description) > DESCRIPTION_MAX_CHARS or any(ord(c) < 0x20 for c in description):
        return f"description must be one sentence of at most {DESCRIPTION_MAX_CHARS} characters"
    if value["action"] not in ACTIONS:
        return f"action must be one of {list(ACTIONS)}, got {value['action']!r}"
    return None


def canonical_json(answer: dict[str, Any]) -> str:
    """The stored form of a valid answer: schema key order, no whitespace, so equal answers are equal bytes."""
    ordered = {key: answer[key] for key in ANSWER_SCHEMA["required"]}
    ordered["risk"] = float(ordered["risk"])
    ordered["description"] = ordered["description"].strip()
    return json.dumps(ordered, separators=(",", ":"), ensure_ascii=False)


def answer_from_text(text: str | None, attempts: int, error: str | None = None, transient: bool = False) -> VlmAnswer:
    """The :class:`VlmAnswer` for a final text (or for a transport failure when ``text`` is None)."""
    if text is None:
        return VlmAnswer(False, None, None, None, attempts, error or "no answer", transient)
    answer, why = check_answer(text)
    if answer is None:
        return VlmAnswer(False, None, None, text, attempts, why)
    return VlmAnswer(True, answer["description"].strip(), canonical_json(answer), text, attempts)


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")
