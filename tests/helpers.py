"""Small helpers shared by the layer tests."""
import numpy as np

import tinyvae as tv


def to_float64(module):
    """Convert a module's parameters and buffers to float64 in place (for gradchecks)."""
    for p in module.parameters():
        p.data = p.data.astype(np.float64)
    for _, m in module.named_modules():
        for name in m._buffers:
            object.__setattr__(m, name, getattr(m, name).astype(np.float64))
    return module


def module_gradcheck(module, *inputs, **kw):
    """Gradcheck a module's output with respect to its inputs and every parameter (float64)."""
    to_float64(module)
    xs = [tv.tensor(x, dtype=np.float64, requires_grad=True) for x in inputs]
    params = list(module.parameters())
    n = len(xs)
    return tv.gradcheck(lambda *ts: module(*ts[:n]), xs + params, **kw)
