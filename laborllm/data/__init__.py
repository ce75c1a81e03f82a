"""Data layer: panels, schemes and crosswalks, loaders, splits and events."""
from laborllm.data.events import Events, assign_splits, make_events
from laborllm.data.loaders import EMBEDDED, load_panel
from laborllm.data.panel import Panel
from laborllm.data.schemes import MISSING, Scheme

__all__ = ["EMBEDDED", "MISSING", "Events", "Panel", "Scheme", "assign_splits", "load_panel", "make_events"]
