"""One module per built-in reduction method; importing this package imports every module in it,
and each registers its reducer (``register_reducer``), which is what lists it.

The paper's methods are imported first, in the order of its tables, so listings read in that
order; any other module here is imported after them, in name order.
"""

import importlib
import pkgutil

_PAPER_ORDER = ("topk", "evit", "dynamicvit", "ats", "sit", "patchmerger", "dpcknn", "tome")

_found = sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))
for _name in [m for m in _PAPER_ORDER if m in _found] + [m for m in _found if m not in _PAPER_ORDER]:
    importlib.import_module(f"{__name__}.{_name}")
