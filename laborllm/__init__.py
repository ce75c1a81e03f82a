"""laborllm: predict a worker's next occupation with language models, and benchmark it honestly."""
from laborllm.data import Events, Panel, load_panel, make_events

__version__ = "0.1.0"
__all__ = ["Events", "Panel", "load_panel", "make_events", "__version__"]
