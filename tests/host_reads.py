"""Counting the reads of tensor values on the host (on CUDA each waits for the device's queue)."""

import contextlib
import sys

import torch

#: the Tensor methods that read a value on the host
READS = ("item", "tolist", "cpu", "numpy", "nonzero", "__bool__", "__float__", "__int__", "__index__")


@contextlib.contextmanager
def host_reads():
    """Every read of a tensor's value inside the block, appended to the yielded list as
    (method, calling function, the caller's file name)."""
    sites, originals = [], {name: getattr(torch.Tensor, name) for name in READS}

    def counted(name):
        def read(self, *args, **kwargs):
            frame = sys._getframe(1)
            if frame.f_code.co_name.startswith("<"):  # a comprehension's own frame (Python < 3.12)
                frame = frame.f_back
            caller = frame.f_code
            sites.append((name, caller.co_name, caller.co_filename.rsplit("/", 1)[-1]))
            return originals[name](self, *args, **kwargs)
        return read

    try:
        for name in READS:
            setattr(torch.Tensor, name, counted(name))
        yield sites
    finally:
        for name, method in originals.items():
            setattr(torch.Tensor, name, method)
