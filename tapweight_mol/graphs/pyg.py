"""PyTorch Geometric, imported once: without its import-time notice on ``torch.jit.script`` (a
deprecation inside the library that users can do nothing about), and without the classes its
import adds to torch's ``weights_only`` allow-list (``dict``, ``list``, ``collections.defaultdict``,
its own data classes...). tapweight reads every checkpoint with ``weights_only=True`` and names
what a file would need unpickled; importing a backbone's library must not widen that. Every
module of the project imports PyG from here."""

import warnings

from torch.serialization import add_safe_globals, clear_safe_globals, get_safe_globals

_allowed = get_safe_globals()
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=".*torch.jit.script.* is deprecated", category=FutureWarning)
    from torch_geometric.data import Batch, Data
    from torch_geometric.nn import MessagePassing, global_mean_pool
    from torch_geometric.utils import degree, scatter, softmax, subgraph
clear_safe_globals()
add_safe_globals(_allowed)

__all__ = ["Batch", "Data", "MessagePassing", "degree", "global_mean_pool", "scatter", "softmax", "subgraph"]
