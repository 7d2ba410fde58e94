"""sleutelbos — a sovereign control plane for smart-meter fleets.

The package is one folder per component (see ``docs/architecture.md``); ``core`` is the shared ground that
imports no component, and ``stack`` is the composition root that wires the components together.
"""

__version__ = "0.1.0"
