"""The ``clca-edge`` command line: thin click commands over library functions.

Imports stay lazy: ``clca-edge --help`` must not import torch or tensorrt. Each command module
registers itself on ``main``; library errors become one-line messages with exit codes.
"""

from ._common import main
from . import bench_cmds, doctor_cmds, model_cmds, quickstart_cmds  # noqa: F401,E402  (register their commands)
from . import train_cmds  # noqa: F401,E402  (registers train, eval, data)
from . import runtime_cmds  # noqa: F401,E402  (registers predict, capture)
from . import deploy_cmds  # noqa: F401,E402  (registers deploy, build-engine)
from . import trust_cmds  # noqa: F401,E402  (registers keygen)
from . import robustness_cmds  # noqa: F401,E402  (registers robustness)
from . import explain_cmds  # noqa: F401,E402  (registers explain)
from . import fleet_cmds  # noqa: F401,E402  (registers fleet sync|collect|status|report|harvest)
from . import rollout_cmds  # noqa: F401,E402  (registers agent, fleet publish|rollout status|promote|halt)

__all__ = ["main"]
