"""facet engine. ``import engine`` stays light: torch and friends load on first use."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["Engine", "EngineConfig"]

if TYPE_CHECKING:
    from engine.api import Engine
    from engine.config import EngineConfig


def __getattr__(name: str) -> Any:
    if name == "Engine":
        from engine.api import Engine

        return Engine
    if name == "EngineConfig":
        from engine.config import EngineConfig

        return EngineConfig
    raise AttributeError(name)
