"""Pydantic schemas: product input, task outputs, attribute schemas, result records.

This is the lowest layer: it imports nothing else from facet.
"""

from schemas.attributes import AttributeSchema, AttributeSpec, load_attribute_schema
from schemas.product import Product
from schemas.results import AttributeValue, ErrorRecord, ExtractionResult, Grounding

__all__ = [
    "AttributeSchema",
    "AttributeSpec",
    "AttributeValue",
    "ErrorRecord",
    "ExtractionResult",
    "Grounding",
    "Product",
    "load_attribute_schema",
]
