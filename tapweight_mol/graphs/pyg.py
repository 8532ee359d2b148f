"""PyTorch Geometric, imported once without its import-time notice on ``torch.jit.script``
(a deprecation inside the library that users can do nothing about)."""

import warnings

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=".*torch.jit.script.* is deprecated", category=FutureWarning)
    from torch_geometric.data import Batch, Data
    from torch_geometric.nn import MessagePassing, global_mean_pool
    from torch_geometric.utils import degree, softmax

__all__ = ["Batch", "Data", "MessagePassing", "degree", "global_mean_pool", "softmax"]
