"""Normalization rules that need no model: quantities with units (pint), counts, expansions, colour names
(webcolors). Pure functions of a value and its rule; prompts/tasks/normalize.py applies them in order."""

from __future__ import annotations

import colorsys
import re
from functools import lru_cache

from schemas.normalization import NormRule

# -- units ---------------------------------------------------------------------------------------
_UNIT_WORDS = {
    '"': "inch", "''": "inch", "″": "inch", "”": "inch", "in": "inch", "inch": "inch", "inches": "inch",
    "'": "foot", "′": "foot", "ft": "foot", "feet": "foot", "foot": "foot", "yd": "yard", "yard": "yard",
    "yards": "yard", "yds": "yard", "mm": "millimeter", "cm": "centimeter", "m": "meter", "meter": "meter", "meters": "meter",
    "oz": "ounce", "ounce": "ounce", "ounces": "ounce", "lb": "pound", "lbs": "pound", "pound": "pound",
    "pounds": "pound", "g": "gram", "gram": "gram", "grams": "gram", "kg": "kilogram", "kilogram": "kilogram",
    "kilograms": "kilogram", "mg": "milligram", "l": "liter", "ml": "milliliter", "gal": "gallon",
    "floz": "fluid_ounce", "kb": "kilobyte", "mb": "megabyte", "gb": "gigabyte", "tb": "terabyte",
}
_NUMBER = r"(?P<fnum>\d+)/(?P<fden>\d+)|(?P<whole>\d*[.,]?\d+)(?:(?:\s*-\s*|\s+)(?P<num>\d+)/(?P<den>\d+))?"
_QUANTITY = re.compile(rf"(?:{_NUMBER})\s*(?P<unit>[A-Za-z]+\.?|\"|''|″|”|'|′)?")


@lru_cache(maxsize=1)
def _ureg():
    import pint

    return pint.UnitRegistry()


def _magnitude(m: re.Match) -> float:
    if m.group("fnum"):
        return int(m.group("fnum")) / int(m.group("fden"))
    whole = m.group("whole")
    # "1,000" is a thousands separator, "2,5" a decimal comma
    value = float(whole.replace(",", "") if re.fullmatch(r"\d*,\d{3}", whole) else whole.replace(",", "."))
    if m.group("num"):
        value += int(m.group("num")) / int(m.group("den"))
    return value


def convert_unit(value: str, rule: NormRule) -> str | None:
    """The value converted to ``rule.unit`` (the larger end of a range), or None when it holds no usable quantity."""
    ureg = _ureg()
    found = []
    value = re.sub(r"\bfl\.?\s*oz\b", "floz", value, flags=re.I)
    for m in _QUANTITY.finditer(value):
        word = (m.group("unit") or "").rstrip(".").lower()
        unit = _UNIT_WORDS.get(word)
        if word and unit is None:
            continue  # "5 Pack", "2 x": not a quantity of this kind
        found.append((_magnitude(m), unit))
    if not found:
        return None
    # a range or "W x H" lists: a unit written once applies to the numbers before it
    units = [u for _, u in found if u]
    default = units[-1] if units else rule.default_unit
    best = None
    for magnitude, unit in found:
        try:
            q = ureg.Quantity(magnitude, unit or default).to(rule.unit)
        except Exception:  # noqa: BLE001 - pint: undefined or incompatible unit
            return None
        best = q.magnitude if best is None else max(best, q.magnitude)
    return _fmt(best, rule.decimals)


def _fmt(x: float, decimals: int | None) -> str:
    if decimals == 0:
        return str(int(round(x)))
    return f"{round(x, decimals if decimals is not None else 2)}"


_WORDS = {"one": 1, "single": 1, "two": 2, "dual": 2, "double": 2, "twin": 2, "pair": 2, "three": 3, "triple": 3,
          "four": 4, "quad": 4, "five": 5, "six": 6, "hex": 6, "seven": 7, "eight": 8, "octa": 8, "nine": 9,
          "ten": 10, "eleven": 11, "twelve": 12, "dozen": 12,
          # hardware shorthand: single/dual port, dual/quad core
          "sp": 1, "dp": 2, "dc": 2, "qp": 4, "qc": 4}


def to_number(value: str, decimals: int | None = 0) -> str | None:
    """The first count in the value: digits (thousands separators, a K suffix) or a number word."""
    m = re.search(r"(\d{1,3}(?:,\d{3})+|\d+(?:\.\d+)?)\s*([kK]\b)?", value)
    if m:
        x = float(m.group(1).replace(",", "")) * (1000 if m.group(2) else 1)
        return _fmt(x, decimals)
    for word in re.findall(r"[a-z]+", value.lower()):
        if word in _WORDS:
            return str(_WORDS[word])
    return None


def expand(value: str, replacements: dict[str, str]) -> str:
    for pattern, repl in replacements.items():
        value = re.sub(pattern, repl, value)
    return " ".join(value.split())


# -- colours -------------------------------------------------------------------------------------
_SPECIAL = {"assorted": "assorted", "multi": "assorted", "multicolor": "assorted", "multicolored": "assorted",
            "rainbow": "assorted", "clear": "clear", "transparent": "clear", "silver": "metallic",
            "chrome": "metallic", "metallic": "metallic", "steel": "metallic", "stainless": "metallic",
            "grey": "gray", "charcoal": "gray"}


@lru_cache(maxsize=1)
def _css_names() -> dict[str, tuple[int, int, int]]:
    import webcolors

    return {n: tuple(webcolors.name_to_rgb(n)) for n in webcolors.names("css3")}


def colour_family(rgb: tuple[int, int, int]) -> str:
    """A basic colour family for an RGB colour (hue for saturated colours, lightness for greys)."""
    h, lum, s = colorsys.rgb_to_hls(*(c / 255 for c in rgb))
    deg = h * 360
    if s < 0.2 or (lum > 0.92) or lum < 0.12:
        return "white" if lum > 0.85 else "black" if lum < 0.2 else "gray"
    if (deg < 15 or deg >= 345) and lum > 0.75:
        return "pink"
    if 15 <= deg < 50 and lum > 0.75:
        return "beige"
    if 15 <= deg < 45 and lum < 0.45:
        return "brown"
    for upper, name in ((15, "red"), (45, "orange"), (70, "yellow"), (170, "green"), (260, "blue"),
                        (300, "purple"), (345, "pink"), (361, "red")):
        if deg < upper:
            return name
    return "red"


def colour_families(value: str) -> list[str]:
    """Colour families named in a value, in order ("sky blue, canary yellow" -> blue, yellow)."""
    names = _css_names()
    words = re.findall(r"[a-z]+", value.lower())
    out: list[str] = []
    i = 0
    while i < len(words):
        two = words[i] + words[i + 1] if i + 1 < len(words) else None
        if two and two in names:
            fam, i = colour_family(names[two]), i + 2
        elif words[i] in _SPECIAL:
            fam, i = _SPECIAL[words[i]], i + 1
        elif words[i] in names:
            fam, i = colour_family(names[words[i]]), i + 1
        else:
            i += 1
            continue
        if fam not in out:
            out.append(fam)
    return out


def choose_colour(value: str, options: list[str]) -> str | None:
    """Map a colour value onto colour options with webcolors; None when it names no colour we know."""
    fams = colour_families(value)
    if not fams:
        return None

    def option_for(fam: str) -> str | None:
        for o in options:
            words = re.findall(r"[a-z]+", o.lower())
            if fam in words or (fam == "assorted" and {"assorted", "multicolor", "multi", "mixed"} & set(words)) \
                    or (fam == "clear" and "transparent" in words) or (fam in ("metallic", "gray") and "metallic" in words):
                return o
        return None

    if len(fams) > 2 and option_for("assorted"):
        return option_for("assorted")
    return option_for(fams[0])


def is_colour_options(options: list[str]) -> bool:
    names = _css_names()
    return sum(1 for o in options if o.split()[0].lower() in names) >= max(2, (len(options) + 1) // 2)
