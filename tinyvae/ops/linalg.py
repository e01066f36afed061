"""Matrix product with NumPy's ``matmul`` semantics: batched, broadcasting batch dims,
1-D operands promoted to a row (left) or column (right) and the axis dropped after."""
from .. import backend
from ..autograd import Function


def _swap_last(a):
    return backend.array_module(a).swapaxes(a, -1, -2)


class MatMul(Function):
    """y = a @ b;  da = g bᵀ,  db = aᵀ g (batch dims summed back by the tape)."""

    def forward(self, a, b):
        k_a = a.shape[-1] if a.ndim else None
        k_b = (b.shape[0] if b.ndim == 1 else b.shape[-2]) if b.ndim else None
        if a.ndim == 0 or b.ndim == 0 or k_a != k_b:
            raise ValueError(f"matmul: shapes {a.shape} and {b.shape} are not aligned "
                             f"(inner dimensions {k_a} and {k_b})")
        self.saved = (a, b)
        return backend.array_module(a).asarray(a @ b)   # vector @ vector gives a NumPy scalar

    def backward(self, gy):
        a, b = self.saved
        a2 = a[None, :] if a.ndim == 1 else a          # [..., n, k]
        b2 = b[:, None] if b.ndim == 1 else b          # [..., k, m]
        if b.ndim == 1:
            gy = gy[..., None]           # restore the dropped m axis first ...
        if a.ndim == 1:
            gy = gy[..., None, :]        # ... then the dropped n axis before it
        ga = gy @ _swap_last(b2) if self.needs_grad(0) else None
        gb = _swap_last(a2) @ gy if self.needs_grad(1) else None
        if a.ndim == 1 and ga is not None:
            ga = ga[..., 0, :]
        if b.ndim == 1 and gb is not None:
            gb = gb[..., 0]
        return ga, gb


class Linear(Function):
    """y = x Wᵀ + b for x [..., in], W [out, in], b [out], as one node (PyTorch's addmm).
    dx = g W,  dW = gᵀ x (contiguous, [out, in]),  db = Σ g over the leading axes."""

    def forward(self, x, weight, bias=None):
        if x.ndim == 0 or x.shape[-1] != weight.shape[1]:
            raise ValueError(f"linear: input features {x.shape[-1:] if x.ndim else ()} do not match "
                             f"weight shape {weight.shape}")
        self.saved = (x, weight)
        y = x @ weight.T
        if bias is not None:
            y += bias
        return y

    def backward(self, gy):
        x, weight = self.saved
        g2 = gy.reshape(-1, gy.shape[-1])
        gx = gy @ weight if self.needs_grad(0) else None
        gw = g2.T @ x.reshape(-1, x.shape[-1]) if self.needs_grad(1) else None
        gb = g2.sum(axis=0) if len(self.inputs) > 2 and self.needs_grad(2) else None
        return gx, gw, gb
