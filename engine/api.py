"""The Python API: ``Engine().extract({...})``. Every method runs a registered task (prompts/tasks) with the same
options the CLI offers (``Engine.run(task, products, **options)``); the named methods keep their signatures."""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from engine import adapters as shipped_adapters
from engine.adapters import DEFAULT, resolve_adapter, shipped_tasks
from engine.config import EngineConfig, LazyBackend, load_backend
from engine.models import DEFAULT_MODEL
from engine.runner import RunStats
from prompts.tasks.base import Setup, as_pool, as_product, as_schema, get, options_from  # noqa: F401  (public)
from schemas import ErrorRecord, ExtractionResult


class Engine:
    """Structured product attributes from text, with an LLM under grammar constraints.

    >>> eng = Engine()                                   # embedded default model, CPU
    >>> r = eng.extract({"id": "p1", "title": "Levi's 501 Original Fit Jeans, W32 L34"})
    >>> r.attributes                                     # validated AttributeValue objects

    ``attributes`` (a path or :class:`AttributeSchema`) fixes which attributes to ask for per
    category; ``examples`` (a JSONL path or :class:`ExamplePool`) turns on few-shot prompting.
    The model loads on first use. ``backend`` may be any object with the Backend protocol.

    ``adapter``: by default the adapters facet ships (extract, classify and rank; completion reads with the
    extraction adapter; normalization's model decisions use the base model); ``None`` for the base model; a folder
    from ``facet train`` to replace them (for extraction; ``adapters={"classify": PATH, ...}`` sets one per task).
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        attributes: str | Path | Any = None,
        examples: str | Path | Any = None,
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
        # the shipped adapters, for the default model served here (a backend object given brings its own adapters)
        if shipped and backend is None and config.get("backend") != "openai" and str(model) == DEFAULT_MODEL:
            # merged into the weights only one adapter can be served: extraction's (the others then use the base)
            for task in ("extract",) if config.get("merge_adapter") else shipped_tasks():
                if task not in adapters and (path := shipped_adapters.shipped_adapter_for(task)):
                    adapters.setdefault(path.name, str(path))  # each shipped adapter served once, by folder name
        elif not shipped and adapter is not None:
            path = resolve_adapter(adapter, "extract")
            if path is not None:
                adapters.setdefault("extract", str(path))
        self.config = EngineConfig(model=model, adapters=adapters, **config)
        # the options each task starts from (its method's keyword arguments override them)
        self.defaults: dict[str, dict[str, Any]] = {
            "extract": {"attributes": attributes, "examples": examples, "shots": shots, "template": template,
                        "free": not grounded},
            "complete": {"attributes": attributes},
            "classify": {"taxonomy": taxonomy},
        }
        self._built: dict[tuple, Any] = {}
        self.extract_task = self.task("extract")
        self._backend = backend
        self.stats = RunStats()

    # -- tasks from the registry --------------------------------------------------------------------------------
    def _adapter_name(self, task: str, demonstrations: bool = False) -> str | None:
        """The served adapter a task's requests name: its own when one was given, else the shipped one trained on
        that task when the prompts carry no demonstrations or the task is in ``WITH_DEMONSTRATIONS`` (the others
        were trained without them), else none (the base model)."""
        adapters = self.config.adapters
        demonstrations = demonstrations and task not in shipped_adapters.WITH_DEMONSTRATIONS
        if task in adapters and not (demonstrations and shipped_adapters.is_shipped(adapters[task])):
            return task
        if demonstrations:
            return None
        shipped = shipped_adapters.shipped_adapter_for(task)
        for name, path in adapters.items():
            if shipped is not None and shipped_adapters.is_shipped(path) and Path(path).resolve() == shipped.resolve():
                return name
        return None

    def _setup(self, task: str, opts: Any) -> Setup:
        name = self._adapter_name(task, bool(getattr(opts, "examples", None)))
        return Setup(adapter=self.config.adapters.get(name) if name else None, adapter_name=name,
                     warn=lambda text: warnings.warn(text, stacklevel=4), note=lambda text: None)

    def _options(self, task: str, values: dict[str, Any]) -> Any:
        td = get(task)
        unknown = set(values) - set(td.options.__dataclass_fields__)
        if unknown:
            raise TypeError(f"{task}: unknown option(s) {sorted(unknown)}; known: "
                            f"{sorted(td.options.__dataclass_fields__)}")
        return options_from(td.options, {**self.defaults.get(task, {}), **values})

    def task(self, task: str, **options: Any) -> Any:
        """The task object (its prompts: ``.messages(item)``) that :meth:`run` would use with these options."""
        opts = self._options(task, options)
        return self._build(task, opts, self._setup(task, opts))

    def _build(self, task: str, opts: Any, setup: Setup) -> Any:
        """Build once per task and option values: a call in a loop (``eng.extract(p)`` per product) does not read
        the example pool, the attribute list or the taxonomy again, nor repeat a warning."""
        try:
            key = (task, tuple(sorted(vars(opts).items())))
            hash(key)
        except TypeError:  # an unhashable value (a dict of attributes, a list of pairs): built for this call only
            return get(task).build(opts, setup)
        if key not in self._built:
            self._built[key] = get(task).build(opts, setup)
        return self._built[key]

    def run(self, task: str, products: Iterable[Any], **options: Any) -> list:
        """Any registered task over ``products`` (dicts, Products or titles): one result or ErrorRecord each, in
        input order; ``options`` are the task's (the same as its CLI flags, e.g. ``shots=1``)."""
        td = get(task)
        opts = self._options(task, options)
        setup = self._setup(task, opts)
        built = self._build(task, opts, setup)
        items, errors = [], {}
        products = list(products)
        for i, p in enumerate(products):
            try:
                items.append(td.item(opts, p, i))
            except (ValueError, TypeError) as exc:
                from engine.io import describe_validation

                pid = str(p.get("id", i)) if isinstance(p, dict) else str(i)
                errors[i] = ErrorRecord(id=pid, task=task, error=describe_validation(exc))
        state, bad = td.prepare(opts, items, setup) if td.prepare else (None, [])
        for rec in bad:  # e.g. behaviour events that could not be applied: they belong to no product of the list
            warnings.warn(f"{rec.id}: {rec.error}", stacklevel=2)
        done = iter(td.run(LazyBackend(lambda: self.backend), built, items, self.stats, state) if items else [])
        return [errors[i] if i in errors else next(done) for i in range(len(products))]

    @property
    def backend(self):
        if self._backend is None:
            self._backend = load_backend(self.config)
        return self._backend

    # -- the named tasks ------------------------------------------------------------------------------------------
    def extract(self, product: Any, **options: Any) -> ExtractionResult | ErrorRecord:
        return self.extract_many([product], **options)[0]

    def extract_many(self, products: Iterable[Any], *, spec: Any = None,
                     **normalize_options: Any) -> list[ExtractionResult | ErrorRecord]:
        """ExtractionResult or ErrorRecord per product, in input order. With ``spec`` (as :meth:`normalize_many`
        takes it, with its options) the values found are also normalized: ``result.normalized``. The names stay
        the ones asked for unless an alias or spelling maps them (``ask_names=True`` lets the model map them)."""
        products = [as_product(p, i) for i, p in enumerate(products)]
        results = self.run("extract", products)
        if spec is None:
            return results
        from prompts.tasks.normalize import normalize_found

        task = self.task("normalize", **_normalize_values(spec, **{"ask_names": False, **normalize_options}))
        return list(normalize_found(LazyBackend(lambda: self.backend), task, products, results, len(products) or 1,
                                    self.stats))

    def classify(self, product: Any, **options: Any):
        """Category path of one product; see :meth:`classify_many`."""
        return self.classify_many([product], **options)[0]

    def classify_many(self, products: Iterable[Any], *, taxonomy: Any = None, examples: Any = None,
                      shots: int = 3, top_k: int = 3, review_below: float = 0.5, **options: Any) -> list:
        """ClassificationResult (path, label, confidence, alternatives, needs_review) or ErrorRecord per product.

        ``taxonomy``: a :class:`Taxonomy`, a file (Shopify categories.txt, 'A > B' lines, JSON), or a list
        of labels; defaults to the one given to the Engine, else Shopify's. ``examples``: labelled (product, path)
        pairs, or a file of them (JSONL ``{title, category: "A > B"}`` or PriceRunner-style CSV). ``options``: the
        classify task's others (``facet classify --help``), e.g. ``search=0`` for greedy level-by-level decoding,
        ``neighbours=FILE`` for a catalogue's own labelled titles to vote beside the model (default: the ones facet
        ships, where their paths are in the taxonomy; ``"none"``: the model alone).
        """
        given = {"taxonomy": taxonomy} if taxonomy is not None else {}
        return self.run("classify", products, examples=examples, shots=shots, top_k=top_k,
                        review_below=review_below, **given, **options)

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
        return self.run("normalize", products, **_normalize_values(spec, examples=examples, shots=shots,
                                                                   drop_unknown=drop_unknown))

    def complete(self, product: Any, attributes: Any = None, **options: Any):
        """Missing attribute values of one product; see :meth:`complete_many`."""
        return self.complete_many([product], attributes, **options)[0]

    def complete_many(self, products: Iterable[Any], attributes: Any = None, *, examples: Any = None,
                      shots: int = 3, min_confidence: float = 0.5) -> list:
        """CompletionResult (given, filled with confidence and source, abstained) or ErrorRecord per product.

        ``attributes``: which attributes each category should have (path, dict or AttributeSchema); defaults to
        the Engine's, else those a complete adapter was trained on. Given values are never asked for or changed.
        """
        given = {"attributes": attributes} if attributes is not None else {}
        return self.run("complete", products, examples=examples, shots=shots, min_confidence=min_confidence,
                        **given)

    def rank(self, product: Any, **options: Any):
        """Attribute importance for one product; see :meth:`rank_many`."""
        return self.rank_many([product], **options)[0]

    def understand_query(self, product: Any, query: str | None = None, *, read_unmatched: bool = False):
        """Which phrase of the search goes to which of the product's attributes, and why (what :meth:`rank` uses):
        a :class:`prompts.tasks.query.QueryUnderstanding` (``.phrases``, ``.mass()``, ``.as_dict()``). ``product``: a
        record as for :meth:`rank` (``attributes`` with or without values, or ``rank``: names)."""
        from prompts.tasks.rank import as_request, understanding_of

        task = self.task("rank", shots=0, reasons="none", read_unmatched=read_unmatched)
        return understanding_of(LazyBackend(lambda: self.backend), task, [as_request(product, 0, query=query)],
                                self.stats)[0]

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
        return self.run("rank", products, query=query, user=user, segment=segment, behaviour=behaviour,
                        examples=examples, shots=shots, reasons=reasons)


def _normalize_values(spec: Any, *, drop_unknown: bool = True, **options: Any) -> dict:
    """The normalize task's option values from the API's keyword arguments (``drop_unknown`` is the CLI's
    ``--keep-unknown`` the other way round)."""
    return {"spec": spec, "keep_unknown": not drop_unknown, **options}
