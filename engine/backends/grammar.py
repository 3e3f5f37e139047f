"""Output constraints -> outlines logits processors, one per batch row.

Every row of a batch may carry its own constraint (each product's span schema differs), so a
:class:`RowConstraints` processor dispatches row ``i`` to its own outlines processor. Grammar
engines: ``llguidance`` (default: compiles in milliseconds) and ``xgrammar`` (compiled grammars
cached per schema). outlines' own default engine is not offered: it takes minutes per schema here.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import Any

from engine.errors import EngineError
from engine.types import Choice, Constraint, JsonSchema, Regex

GRAMMAR_ENGINES = ("llguidance", "xgrammar")
COMPACT = {"whitespace_flexible": False, "item_separator": ",", "key_separator": ":"}


def choice_regex(options: tuple[str, ...]) -> str:
    return "(" + "|".join(re.escape(o) for o in options) + ")"


def llguidance_spec(constraint: Constraint) -> str:
    """Translate a constraint into an llguidance grammar spec (pure, cached)."""
    return _llg_spec(_key(constraint))


def _key(constraint: Constraint) -> tuple[str, str]:
    if isinstance(constraint, JsonSchema):
        return ("json", json.dumps(constraint.schema, sort_keys=False))
    if isinstance(constraint, Choice):
        return ("regex", choice_regex(constraint.options))
    if isinstance(constraint, Regex):
        return ("regex", constraint.pattern)
    raise TypeError(f"unknown constraint {constraint!r}")


@lru_cache(maxsize=4096)
def _llg_spec(key: tuple[str, str]) -> str:
    import llguidance

    kind, body = key
    if kind == "json":
        schema: dict[str, Any] = json.loads(body)
        schema = {**schema, "x-guidance": COMPACT}
        return llguidance.grammar_from("json_schema", json.dumps(schema))
    return llguidance.grammar_from("regex", body)


def shared_enum_ebnf(schema: dict) -> str | None:
    """The grammar of ``schema``'s compact JSON, with each distinct enum written once, for schemas shaped like
    facet's span schemas (an object whose properties are all required enums of strings or null); None for any
    other shape, which is then compiled as a JSON schema.

    xgrammar writes an enum out again at every property that uses it, and a span schema gives every attribute
    the same spans of the product text: on the OA-Mine validation titles (~12 attributes x ~65 spans) compiling
    the JSON schema took ~37 ms and this grammar ~5 ms. It accepts the same strings xgrammar's JSON schema
    grammar does with compact separators: properties in schema order, values as ``json.dumps`` writes them
    with non-ASCII kept as is."""
    props = schema.get("properties")
    if (set(schema) - {"type", "properties", "required", "additionalProperties"} or schema.get("type") != "object"
            or schema.get("additionalProperties") is not False or not isinstance(props, dict) or not props
            or sorted(schema.get("required") or []) != sorted(props)):
        return None
    rules: dict[str, str] = {}  # enum (as JSON) -> rule name
    body, rule_lines = [], []
    for i, (name, sub) in enumerate(props.items()):
        values = sub.get("enum") if isinstance(sub, dict) and set(sub) == {"enum"} else None
        if not values or not all(v is None or isinstance(v, str) for v in values):
            return None
        key = json.dumps(values)
        if key not in rules:
            rules[key] = f"value{len(rules)}"
            rule_lines.append(f"{rules[key]} ::= " + " | ".join(_ebnf_literal(_json(v)) for v in values))
        body.append(f"{_ebnf_literal((',' if i else '') + _json(name) + ':')} {rules[key]}")
    return "\n".join([f'root ::= "{{" {" ".join(body)} "}}"', *rule_lines])


def _json(value) -> str:
    return json.dumps(value, ensure_ascii=False)


def _ebnf_literal(text: str) -> str:
    """An EBNF string literal matching ``text`` (JSON text: control characters are already escaped)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


PROBE = ' Brand: "Café Noir", 12 oz'


def check_llg_vocabulary(tokenizer, llg_tokenizer) -> None:
    """llguidance must read the same bytes out of every token as the tokenizer does; when it does not, the
    grammar masks the wrong tokens and answers come out as broken JSON. Seen with a model folder whose
    tokenizer was exported by transformers 5.17 from GGUF: llguidance took byte-level tokens ('Ġname')
    for literal text."""
    ids = tokenizer(PROBE, add_special_tokens=False).input_ids
    got = llg_tokenizer.decode_bytes(ids)
    want = tokenizer.decode(ids).encode()
    if got != want:
        raise EngineError(
            f"llguidance reads this tokenizer's vocabulary wrongly ({want!r} comes back as {got!r}), so constrained "
            f"decoding would produce broken output. Use --grammar xgrammar, or re-export the model folder with "
            f"transformers>=5.19 (for the default model delete the facet cache folder models/SmolLM2-135M-Instruct "
            f"and run again)."
        )


class GrammarFactory:
    """Builds a fresh outlines logits processor for a constraint; caches compiled grammars."""

    def __init__(self, tokenizer, engine: str = "llguidance"):
        if engine not in GRAMMAR_ENGINES:
            raise ValueError(f"grammar engine must be one of {GRAMMAR_ENGINES}, not {engine!r}")
        self.engine = engine
        self.tokenizer = tokenizer
        self._llg_tokenizer = None
        self._xgr_compiler = None
        self._xgr_cache: dict[tuple[str, str], Any] = {}
        self._llg_checked: set[str] = set()

    def processor(self, constraint: Constraint):
        if self.engine == "llguidance":
            from outlines.backends.llguidance import LLGuidanceLogitsProcessor

            if self._llg_tokenizer is None:
                import llguidance.hf

                self._llg_tokenizer = llguidance.hf.from_tokenizer(self.tokenizer)
                check_llg_vocabulary(self.tokenizer, self._llg_tokenizer)
            spec = llguidance_spec(constraint)
            self._check_llg(spec)
            return LLGuidanceLogitsProcessor(spec, self._llg_tokenizer, "torch")
        from outlines.backends.xgrammar import XGrammarLogitsProcessor

        return XGrammarLogitsProcessor(self._xgr_compiled(constraint), "torch")

    def _check_llg(self, spec: str) -> None:
        """An unsupported schema must fail loudly, not decode unconstrained (or stop at once)."""
        if spec in self._llg_checked:
            return
        import llguidance

        problems = llguidance.LLMatcher.validate_grammar(spec, self._llg_tokenizer)
        if problems:
            raise EngineError(f"the output constraint cannot be compiled by llguidance: {problems}")
        self._llg_checked.add(spec)

    def _xgr_compiled(self, constraint: Constraint):
        key = _key(constraint)
        if key not in self._xgr_cache:
            import xgrammar as xgr

            if self._xgr_compiler is None:
                info = xgr.TokenizerInfo.from_huggingface(self.tokenizer, vocab_size=len(self.tokenizer))
                self._xgr_compiler = xgr.GrammarCompiler(info)
            kind, body = key
            ebnf = shared_enum_ebnf(constraint.schema) if kind == "json" else None
            if ebnf is not None:
                compiled = self._xgr_compiler.compile_grammar(ebnf)
            elif kind == "json":
                compiled = self._xgr_compiler.compile_json_schema(
                    body, any_whitespace=False, separators=(",", ":")
                )
            else:
                compiled = self._xgr_compiler.compile_regex(body)
            self._xgr_cache[key] = compiled
        return self._xgr_cache[key]


class RowConstraints:
    """A transformers logits processor applying a different (or no) constraint per batch row."""

    def __init__(self, processors: list[Any | None], stop_ids: set[int]):
        self.processors = processors
        self.stop_ids = stop_ids
        self.done = [p is None for p in processors]
        self.started = False

    def __call__(self, input_ids, scores):
        if scores.device.type != "cpu":
            # the masks are computed on the CPU anyway; they are applied there too (one copy each way per
            # step), the path measured on an H100 (see README). The in-place GPU path is untested here.
            return self(input_ids.cpu(), scores.cpu()).to(scores.device)
        for i, proc in enumerate(self.processors):
            if self.done[i]:
                continue
            if self.started and int(input_ids[i, -1]) in self.stop_ids:
                self.done[i] = True  # finished rows are padded by generate; leave them alone
                continue
            scores[i : i + 1] = proc(input_ids[i : i + 1], scores[i : i + 1])
        self.started = True
        return scores
