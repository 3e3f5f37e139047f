"""The Python API: ``Engine().extract({...})``."""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from engine import adapters as shipped_adapters
from engine.adapters import (
    DEFAULT,
    prompt_mismatch,
    resolve_adapter,
    shipped_tasks,
    trained_attributes,
)
from engine.config import EngineConfig, load_backend
from engine.models import DEFAULT_MODEL
from engine.runner import RunStats, run_task
from prompts.examples import ExamplePool
from prompts.tasks.extract import Extract
from schemas import AttributeSchema, ErrorRecord, ExtractionResult, Product, load_attribute_schema


def as_product(item: Any, index: int = 0) -> Product:
    if isinstance(item, Product):
        return item
    if isinstance(item, str):
        return Product(id=str(index), title=item)
    if isinstance(item, dict):
        return Product.model_validate({"id": str(index), **item})
    raise TypeError(f"expected a Product, dict or title string, got {type(item).__name__}")


def as_schema(attributes: Any) -> AttributeSchema | None:
    """An AttributeSchema from a path, a ``{category: [names]}`` dict, a schema, or None."""
    if isinstance(attributes, (str, Path)):
        return load_attribute_schema(attributes)
    if isinstance(attributes, dict):
        return AttributeSchema.from_mapping(attributes)
    return attributes


def as_pool(examples: Any) -> ExamplePool | None:
    """An ExamplePool from a JSONL path, a pool, or None."""
    return ExamplePool.from_jsonl(examples) if isinstance(examples, (str, Path)) else examples


class Engine:
    """Structured product attributes from text, with an LLM under grammar constraints.

    >>> eng = Engine()                                   # embedded default model, CPU
    >>> r = eng.extract({"id": "p1", "title": "Levi's 501 Original Fit Jeans, W32 L34"})
    >>> r.attributes                                     # validated AttributeValue objects

    ``attributes`` (a path or :class:`AttributeSchema`) fixes which attributes to ask for per
    category; ``examples`` (a JSONL path or :class:`ExamplePool`) turns on few-shot prompting.
    The model loads on first use. ``backend`` may be any object with the Backend protocol.

    ``adapter``: by default the adapter facet ships, one LoRA adapter for extract, classify, complete and rank
    (normalization's model decisions use the base model); ``None`` for the base model; a folder from ``facet
    train`` to replace it (for extraction; ``adapters={"classify": PATH, ...}`` sets one per task).
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        attributes: str | Path | AttributeSchema | dict | None = None,
        examples: str | Path | ExamplePool | None = None,
        shots: int = 3,
        template: str = "extract.j2",
        grounded: bool = True,
        adapter: str | Path | None = DEFAULT,
        taxonomy: str | Path | Any = None,
        backend: Any = None,
        **config: Any,
    ):
        adapters = dict(config.pop("adapters", {}) or {})
        shipped = adapter is not None and str(adapter) == DEFAULT
        # the shipped adapter, for the default model served here (a backend object given brings its own adapters)
        if shipped and backend is None and config.get("backend") != "openai" and shipped_tasks() \
                and str(model) == DEFAULT_MODEL:
            adapters.setdefault(DEFAULT, str(shipped_adapters.SHIPPED_ADAPTER))  # one adapter, served once, for all its tasks
            adapter = adapters[DEFAULT] if "extract" not in adapters else adapters["extract"]
        elif shipped:
            adapter = None
        elif adapter is not None:
            adapter = resolve_adapter(adapter, "extract")
            if adapter is not None:
                adapters.setdefault("extract", str(adapter))
        self.config = EngineConfig(model=model, adapters=adapters, **config)
        # an adapter is asked the attributes it was trained to answer
        attributes = as_schema(attributes if attributes is not None else trained_attributes(adapter))
        examples = as_pool(examples)
        if adapter is not None and (warning := prompt_mismatch(adapter, examples is not None, template)):
            warnings.warn(warning, stacklevel=2)
        self.extract_task = Extract(
            template=template,
            attribute_schema=attributes,
            examples=examples,
            shots=shots,
            grounded=grounded,
            adapter=self._adapter_name("extract", examples is not None),
        )
        self.taxonomy = taxonomy
        self._backend = backend
        self.stats = RunStats()

    def _adapter_name(self, task: str, demonstrations: bool = False) -> str | None:
        """The served adapter a task's requests name: its own when one was given, else the shipped one when it
        was trained on that task and the prompts carry no demonstrations (its training prompts had none; with
        them the base model answers better, measured), else none (the base model)."""
        adapters = self.config.adapters
        if task in adapters:
            return task
        if DEFAULT in adapters and task in shipped_tasks(adapters[DEFAULT]) and not demonstrations:
            return DEFAULT
        return None

    @property
    def backend(self):
        if self._backend is None:
            self._backend = load_backend(self.config)
        return self._backend

    def extract(self, product: Any, **options: Any) -> ExtractionResult | ErrorRecord:
        return self.extract_many([product], **options)[0]

    def extract_many(self, products: Iterable[Any], *, spec: Any = None,
                     **normalize_options: Any) -> list[ExtractionResult | ErrorRecord]:
        """ExtractionResult or ErrorRecord per product, in input order. With ``spec`` (as :meth:`normalize_many`
        takes it, with its options) the values found are also normalized: ``result.normalized``. The names stay
        the ones asked for unless an alias or spelling maps them (``ask_names=True`` lets the model map them)."""
        items = [as_product(p, i) for i, p in enumerate(products)]
        results = run_task(self.backend, self.extract_task, items, stats=self.stats)
        if spec is None:
            return results
        from prompts.tasks.normalize import normalize_found

        task = self._normalize_task(spec, **{"ask_names": False, **normalize_options})  # names: as asked
        return list(normalize_found(self.backend, task, items, results, len(items) or 1, self.stats))

    def classify(self, product: Any, **options: Any):
        """Category path of one product; see :meth:`classify_many`."""
        return self.classify_many([product], **options)[0]

    def classify_many(self, products: Iterable[Any], *, taxonomy: Any = None, examples: Any = None,
                      shots: int = 3, top_k: int = 3, review_below: float = 0.5) -> list:
        """ClassificationResult (path, label, confidence, alternatives, needs_review) or ErrorRecord per product.

        ``taxonomy``: a :class:`Taxonomy`, a file (Shopify categories.txt, 'A > B' lines, JSON), or a list
        of labels; defaults to the one given to the Engine. ``examples``: labelled (product, path) pairs, or a
        file of them (JSONL ``{title, category: "A > B"}`` or PriceRunner-style CSV).
        """
        from prompts.tasks.classify import Classify, classify_many, labelled_pool
        from schemas.taxonomy import Taxonomy, shopify_taxonomy_file

        tax = taxonomy if taxonomy is not None else self.taxonomy
        if tax is None:
            tax = self._shopify = getattr(self, "_shopify", None) or Taxonomy.load(shopify_taxonomy_file())
        if isinstance(tax, (str, Path)):
            tax = Taxonomy.load(tax)
        elif isinstance(tax, (list, tuple)):
            tax = Taxonomy.from_labels(tax)
        pool = None
        if isinstance(examples, (str, Path)):
            from eval.datasets import read_classification_gold

            examples = [(r.product, r.path) for r in read_classification_gold(examples)]
        if examples is not None:
            pool = labelled_pool([(as_product(p, i), tuple(path.split(" > ")) if isinstance(path, str) else tuple(path))
                                 for i, (p, path) in enumerate(examples)])
        task = Classify(taxonomy=tax, examples=pool, shots=shots, top_k=top_k, review_below=review_below,
                        adapter=self._adapter_name("classify", pool is not None))
        items = [as_product(p, i) for i, p in enumerate(products)]
        return classify_many(self.backend, task, items, stats=self.stats)

    def normalize(self, product: Any, spec: Any, **options: Any):
        """Canonical names and values of one product's ``attributes``; see :meth:`normalize_many`."""
        return self.normalize_many([product], spec, **options)[0]

    def normalize_many(self, products: Iterable[Any], spec: Any, *, examples: Any = None, shots: int = 3,
                       drop_unknown: bool = True) -> list:
        """NormalizationResult (attributes, changes, warnings) or ErrorRecord per product.

        ``spec``: a :class:`NormalizationSpec`, a JSON spec file or a WDC-PAVE descriptions.csv. ``examples``:
        demonstrations (list of ``{title, category, attribute, value, answer}`` or a file of them). Rules decide
        first; the model is loaded only if some value or name needs it.
        """
        from engine.config import LazyBackend
        from prompts.tasks.normalize import normalize_many

        task = self._normalize_task(spec, examples=examples, shots=shots, drop_unknown=drop_unknown)
        items = [as_product(p, i) for i, p in enumerate(products)]
        return normalize_many(LazyBackend(lambda: self.backend), task, items, stats=self.stats)

    def _normalize_task(self, spec: Any, *, examples: Any = None, shots: int = 3, drop_unknown: bool = True,
                        ask_names: bool = True):
        from prompts.tasks.normalize import Normalize, load_examples
        from schemas.normalization import NormalizationSpec

        if not isinstance(spec, NormalizationSpec):
            spec = NormalizationSpec.load(spec)
        if isinstance(examples, (str, Path)):
            examples = load_examples(examples)
        return Normalize(spec=spec, examples=tuple(examples or ()), shots=shots, drop_unknown=drop_unknown,
                         ask_names=ask_names, adapter=self._adapter_name("normalize"))

    def complete(self, product: Any, attributes: Any = None, **options: Any):
        """Missing attribute values of one product; see :meth:`complete_many`."""
        return self.complete_many([product], attributes, **options)[0]

    def complete_many(self, products: Iterable[Any], attributes: Any = None, *, examples: Any = None,
                      shots: int = 3, min_confidence: float = 0.5) -> list:
        """CompletionResult (given, filled with confidence and source, abstained) or ErrorRecord per product.

        ``attributes``: which attributes each category should have (path, dict or AttributeSchema); defaults to
        the Engine's, else those a complete adapter was trained on. Given values are never asked for or changed.
        """
        from prompts.tasks.complete import Complete

        schema = as_schema(attributes if attributes is not None else self.extract_task.attribute_schema
                           or trained_attributes(self.config.adapters.get("complete")))
        if schema is None:
            raise ValueError("complete needs the attributes each category should have: attributes=... or "
                             "Engine(attributes=...)")
        task = Complete(attribute_schema=schema, examples=as_pool(examples), shots=shots, min_confidence=min_confidence,
                        adapter=self._adapter_name("complete", examples is not None))
        items = [as_product(p, i) for i, p in enumerate(products)]
        return run_task(self.backend, task, items, stats=self.stats)

    def rank(self, product: Any, **options: Any):
        """Attribute importance for one product; see :meth:`rank_many`."""
        return self.rank_many([product], **options)[0]

    def understand_query(self, product: Any, query: str | None = None, *, read_unmatched: bool = False):
        """Which phrase of the search goes to which of the product's attributes, and why (what :meth:`rank` uses):
        a :class:`prompts.tasks.query.QueryUnderstanding` (``.phrases``, ``.mass()``, ``.as_dict()``). ``product``: a
        record as for :meth:`rank` (``attributes`` with or without values, or ``rank``: names)."""
        from prompts.tasks.rank import Rank, as_request, understanding_of

        req = as_request(product, 0, query=query)
        task = Rank(shots=0, reasons="none", adapter=self._adapter_name("rank"), read_unmatched=read_unmatched)
        return understanding_of(self.backend, task, [req], self.stats)[0]

    def rank_many(self, products: Iterable[Any], *, query: str | None = None, user: str | None = None,
                  segment: str | None = None, behaviour: Any = None, examples: Any = None, shots: int = 3,
                  reasons: str = "evidence") -> list:
        """RankingResult (attributes in order, weights summing to 1, a reason each) or ErrorRecord per product.

        Each item: a dict with the product's fields and its ``attributes`` (or ``rank``: the names to order),
        optionally ``query``/``user``/``segment`` (the keyword arguments fill those a record lacks). The order is
        always a permutation of the given names. ``behaviour``: an :class:`engine.behaviour.Behaviour` fed with
        events (``behaviour.update(event, names)``) whose rule blends observed interest into the model's weights.
        ``examples``: demonstrations (a JSONL path, or RankExample objects). ``reasons``: "evidence" (what the query
        named, the model's weight, the behaviour share), "model" (written by the model) or "none".
        """
        from engine.io import describe_validation
        from prompts.tasks.rank import Rank, as_request, load_rank_examples, rank_many

        if isinstance(examples, (str, Path)):
            examples = load_rank_examples(examples)
        task = Rank(examples=tuple(examples or ()), shots=shots, reasons=reasons,
                    adapter=self._adapter_name("rank", bool(examples)))
        reqs, errors = [], {}
        for i, p in enumerate(products):
            try:
                reqs.append(as_request(p, i, query=query, user=user, segment=segment))
            except (ValueError, TypeError) as exc:
                pid = str(p.get("id", i)) if isinstance(p, dict) else str(i)
                errors[i] = ErrorRecord(id=pid, task="rank", error=describe_validation(exc))
        done = iter(rank_many(self.backend, task, reqs, behaviour, stats=self.stats) if reqs else [])
        return [errors[i] if i in errors else next(done) for i in range(len(reqs) + len(errors))]
