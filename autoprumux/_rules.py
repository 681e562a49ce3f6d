"""The type and range of one recipe field (`Rule`), and the rules many fields share: checked
once where a `Recipe` is made (`autoprumux.config`), each failure a message naming the field,
its value, what it must be and the default."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass


@dataclass(frozen=True)
class Rule:
    """The type and range of one recipe field."""

    kind: type  # int, float, bool or str
    low: float | None = None  # inclusive lower bound (exclusive with `above`)
    above: bool = False
    high: float | None = None  # inclusive upper bound
    choices: tuple[str, ...] = ()
    none: str = ""  # when set, None is allowed and means this

    def check(self, v: object) -> tuple[bool, object]:
        """(valid, the value normalised to the field's type: int fields int, float fields
        float). bool is an int subclass and NaN a float: both are rejected by hand."""
        if v is None:
            return bool(self.none), v
        if self.kind is bool:
            return isinstance(v, bool), v
        if self.kind is str:
            return isinstance(v, str) and v in self.choices, v
        if isinstance(v, bool) or not isinstance(v, numbers.Real):
            return False, v
        if self.kind is int:
            if not isinstance(v, numbers.Integral):
                return False, v
            x: float = int(v)
        else:
            x = float(v)
            if not math.isfinite(x):
                return False, v
        if self.low is not None and (x <= self.low if self.above else x < self.low):
            return False, v
        if self.high is not None and x > self.high:
            return False, v
        return True, x

    def describe(self) -> str:
        if self.kind is bool:
            return "true or false (a boolean, not a string)"
        if self.kind is str:
            return f"one of {list(self.choices)}"
        what = "an integer" if self.kind is int else "a finite number"
        if self.low is not None and self.high is not None:
            what += f" in {'(' if self.above else '['}{num(self.low)}, {num(self.high)}]"
        elif self.low is not None:
            what += f" {'>' if self.above else '>='} {num(self.low)}"
        return f"None ({self.none}) or {what}" if self.none else what

    def message(self, name: str, value: object, default: object) -> str:
        hint = ""
        if isinstance(value, str) and self.kind in (int, float):
            try:
                float(value)
                hint = " (it is a string: drop the quotes; YAML reads 1e-4 as text, write 1.0e-4)"
            except ValueError:
                pass
        return (
            f"recipe field {name} ({value!r}) must be {self.describe()}, e.g. {default!r} "
            f"(the default){hint}"
        )


def num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(x)


STEPS = Rule(int, low=0)  # 0 = skip the stage
COUNT = Rule(int, low=1)
LR = Rule(float, low=0.0, above=True)
WEIGHT = Rule(float, low=0.0)  # a loss term's weight; 0 = off
FRACTION = Rule(float, low=0.0, high=1.0)  # a weight mixed with the task loss (TrainConfig)
FLAG = Rule(bool)
