"""Prompt categories, as the paper routes them.

Verifiable categories (math, multiple choice, code) get hybrid helpfulness labels: verify, sort into correct
and wrong sets, then rank within each set. Open questions get plain AI preference (the RLAIF baseline).
Harmful prompts get AI red teaming.
"""

from __future__ import annotations

from enum import Enum


class Category(str, Enum):
    MATH = "math"
    MULTIPLE_CHOICE = "multiple_choice"
    CODE = "code"
    OPEN_QA = "open_qa"
    HARMFUL = "harmful"

    @property
    def verifiable(self) -> bool:
        return self in (Category.MATH, Category.MULTIPLE_CHOICE, Category.CODE)

    @classmethod
    def parse(cls, value: str) -> Category:
        try:
            return cls(value)
        except ValueError:
            allowed = ", ".join(c.value for c in cls)
            raise ValueError(f"unknown category {value!r} (allowed: {allowed})") from None


CHOICE_LETTERS = "ABCDEFGH"
