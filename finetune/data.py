"""Training examples: rendered through the task's own template and chat formatting.

The prompt tokens are exactly what inference sends (same template, same ``to_prompt_text``);
the answer is serialized exactly as the constrained decoder emits it (compact JSON in schema
order, null when absent). Loss is taken on the answer tokens only.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from eval.datasets import GoldProduct
from prompts.spans import locate
from prompts.tasks.extract import Extract, answer_json


@dataclass
class DataReport:
    usable: int = 0
    problems: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def add(self, kind: str, where: str) -> None:
        self.problems[kind] += 1
        self.examples.setdefault(kind, [])
        if len(self.examples[kind]) < 3:
            self.examples[kind].append(where)

    def text(self) -> str:
        lines = [f"{self.usable} usable training records"]
        for kind, n in self.problems.most_common():
            lines.append(f"  {n} x {kind} (e.g. {', '.join(self.examples[kind])})")
        return "\n".join(lines)


def extract_pairs(task: Extract, rows: list[GoldProduct], report: DataReport | None = None):
    """(messages, answer) per usable record; problems are counted in ``report``."""
    report = report if report is not None else DataReport()
    pairs = []
    for r in rows:
        p = r.product
        attrs = task.attributes_for(p)
        output = {}
        for name, vals in r.gold.items():
            if not vals:
                continue
            if attrs is not None and name not in {a.name for a in attrs}:
                report.add("attribute outside the schema (dropped)", f"{p.id}:{name}")
                continue
            value = sorted(vals, key=lambda v: (p.text().find(v) < 0, len(v)))[0]
            if task.grounded and locate(value, p.text())[0] != "exact":
                report.add("gold value not in the text (kept)", f"{p.id}:{name}={value!r}")
            output[name] = value
        if not output:
            report.add("record without gold values (skipped)", p.id)
            continue
        report.usable += 1
        pairs.append((task.messages(p), answer_json(output, attrs)))
    return pairs


def encode(tokenizer, messages, answer: str, max_len: int) -> dict | None:
    """Token ids and labels (-100 on the prompt); None when the answer would be cut off."""
    from engine.chat import to_prompt_text

    prompt_ids = tokenizer(to_prompt_text(tokenizer, messages), add_special_tokens=False).input_ids
    answer_ids = tokenizer(answer + tokenizer.eos_token, add_special_tokens=False).input_ids
    ids = prompt_ids + answer_ids
    if len(ids) > max_len:
        return None
    return {"input_ids": ids, "labels": [-100] * len(prompt_ids) + answer_ids}
