"""laborllm: predict a worker's next occupation with language models, and benchmark it honestly."""
import logging

from laborllm.data import Events, Panel, load_panel, make_events

# progress and results are INFO lines (plain on the command line's console); WARNING is kept for what
# deserves one
logging.getLogger(__name__).setLevel(logging.INFO)

__version__ = "0.1.0"
__all__ = ["Events", "Panel", "load_panel", "make_events", "__version__"]
