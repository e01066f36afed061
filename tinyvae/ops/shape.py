"""Ops that move or select elements without arithmetic. Each backward is the adjoint
of the forward's data movement (reshape back, inverse permutation, scatter, slice)."""
from .. import backend
from ..autograd import Function


class Reshape(Function):
    """Backward hands the gradient back in the input's memory order (conv outputs are batch-last
    views, see ops/conv.py): the ops before the reshape combine that gradient elementwise with
    arrays in the input's order, and NumPy's loops over operands in two different orders ran
    4-15x slower than the one transposing copy made here."""

    def __init__(self, shape):
        self.shape = tuple(shape)

    def forward(self, x):
        self.in_shape = x.shape
        self.in_order = memory_order(x)
        return x.reshape(self.shape)

    def backward(self, gy):
        gx = gy.reshape(self.in_shape)
        if memory_order(gx) == self.in_order:
            return gx
        order = self.in_order
        return backend.array_module(gx).ascontiguousarray(gx.transpose(order)).transpose(inverse(order))


def memory_order(a) -> tuple:
    """The axes of ``a`` from the slowest-varying in memory to the fastest."""
    return tuple(sorted(range(a.ndim), key=lambda axis: -abs(a.strides[axis])))


def inverse(permutation) -> list:
    result = [0] * len(permutation)
    for i, p in enumerate(permutation):
        result[p] = i
    return result


class Permute(Function):
    def __init__(self, dims):
        self.dims = tuple(dims)

    def forward(self, x):
        if sorted(d % max(x.ndim, 1) for d in self.dims) != list(range(x.ndim)):
            raise ValueError(f"permute: {self.dims} is not a permutation of the {x.ndim} dims")
        return x.transpose(self.dims)

    def backward(self, gy):
        return gy.transpose(inverse([d % len(self.dims) for d in self.dims]))


class BroadcastTo(Function):
    """Backward is the identity here: the tape's ``sum_to`` does the reduction."""

    def __init__(self, shape):
        self.shape = tuple(shape)

    def forward(self, x):
        return backend.array_module(x).broadcast_to(x, self.shape)

    def backward(self, gy):
        return gy


def _is_advanced(index) -> bool:
    parts = index if isinstance(index, tuple) else (index,)
    return any(not isinstance(p, (int, slice, type(None), type(Ellipsis))) for p in parts)


def _may_repeat(index) -> bool:
    """Whether an advanced index can select one element twice: anything but a single integer
    array (slices and integers around it) whose values are distinct."""
    parts = index if isinstance(index, tuple) else (index,)
    arrays = [p for p in parts if not isinstance(p, (int, slice, type(None), type(Ellipsis)))]
    kind = getattr(getattr(arrays[0], "dtype", None), "kind", None) if len(arrays) == 1 else None
    if kind == "b":                                   # a mask selects each element at most once
        return False
    if kind not in ("i", "u"):
        return True
    xp = backend.array_module(arrays[0])
    values = arrays[0].ravel()
    return bool(values.size and values.min() < 0) or xp.unique(values).size != values.size   # -1 and n−1 may meet


class GetItem(Function):
    """x[index] for basic slicing and integer/boolean array indexing. Backward scatters into
    zeros laid out in memory as x was (a slice of a convolution's batch-last output gets a
    batch-last gradient, which the convolution's backward then takes without a copy),
    accumulating repeated indices; an index that repeats none is assigned, not accumulated
    (np.add.at is ten times slower than an assignment)."""

    def __init__(self, index):
        self.index = index

    def forward(self, x):
        self.in_shape, self.in_order = x.shape, memory_order(x)
        return x[self.index]

    def backward(self, gy):
        xp, order = backend.array_module(gy), self.in_order
        g = xp.zeros([self.in_shape[axis] for axis in order], gy.dtype).transpose(inverse(order))
        if _is_advanced(self.index) and _may_repeat(self.index):     # asked here: no cost without backward
            backend.scatter_add(g, self.index, gy)
        else:
            g[self.index] = gy
        return g


class Concat(Function):
    def __init__(self, axis=0):
        self.axis = axis

    def forward(self, *xs):
        self.sizes = [x.shape[self.axis] for x in xs]
        return backend.array_module(xs[0]).concatenate(xs, axis=self.axis)

    def backward(self, gy):
        xp = backend.array_module(gy)
        cuts = list(_cumsum(self.sizes))[:-1]
        return tuple(xp.split(gy, cuts, axis=self.axis))


class Stack(Function):
    def __init__(self, axis=0):
        self.axis = axis

    def forward(self, *xs):
        return backend.array_module(xs[0]).stack(xs, axis=self.axis)

    def backward(self, gy):
        xp = backend.array_module(gy)
        return tuple(xp.moveaxis(gy, self.axis, 0))


class Split(Function):
    """Multi-output: pieces along ``axis`` cut at ``cuts`` (ascending offsets)."""

    def __init__(self, cuts, axis=0):
        self.cuts, self.axis = list(cuts), axis

    def forward(self, x):
        return tuple(backend.array_module(x).split(x, self.cuts, axis=self.axis))

    def backward(self, *gys):
        return backend.array_module(gys[0]).concatenate(gys, axis=self.axis)


class Pad(Function):
    """Constant padding; ``pad_width`` is NumPy's ((before, after), ...) per axis."""

    def __init__(self, pad_width, value=0.0):
        self.pad_width, self.value = pad_width, value

    def forward(self, x):
        xp = backend.array_module(x)
        self.widths = _pad_widths(self.pad_width, x.ndim)
        return xp.pad(x, self.widths, mode="constant", constant_values=self.value)

    def backward(self, gy):
        return gy[tuple(slice(b, gy.shape[i] - a) for i, (b, a) in enumerate(self.widths))]


def _pad_widths(pad_width, ndim):
    if isinstance(pad_width, int):
        return [(pad_width, pad_width)] * ndim
    widths = [tuple(p) if not isinstance(p, int) else (p, p) for p in pad_width]
    if len(widths) != ndim:
        raise ValueError(f"pad: {len(widths)} (before, after) pairs for a tensor of {ndim} dims")
    if any(b < 0 or a < 0 for b, a in widths):
        raise ValueError(f"pad: negative padding {widths}")
    return widths


class Tril(Function):
    def __init__(self, k=0):
        self.k = k

    def forward(self, x):
        return backend.array_module(x).tril(x, self.k)

    def backward(self, gy):
        return backend.array_module(gy).tril(gy, self.k)


class Diagonal(Function):
    """NumPy's diagonal: the diagonal of axes (axis1, axis2) becomes the last axis."""

    def __init__(self, offset=0, axis1=0, axis2=1):
        self.offset, self.axis1, self.axis2 = offset, axis1, axis2

    def forward(self, x):
        self.in_shape = x.shape
        return backend.array_module(x).diagonal(x, self.offset, self.axis1, self.axis2).copy()

    def backward(self, gy):
        xp = backend.array_module(gy)
        g = xp.zeros(self.in_shape, gy.dtype)
        view = xp.moveaxis(g, (self.axis1, self.axis2), (-2, -1))   # a view: writes land in g
        n = gy.shape[-1]
        rows = xp.arange(n) + max(-self.offset, 0)
        cols = xp.arange(n) + max(self.offset, 0)
        view[..., rows, cols] = gy
        return g


def _cumsum(sizes):
    total = 0
    for s in sizes:
        total += s
        yield total


class StraightThrough(Function):
    """Forward: a given ``value`` (of y's shape and dtype: a one-hot argmax, sampled bits),
    exactly. Backward: y's gradient passed through unchanged, as if the forward were the
    identity (the straight-through estimator of Bengio et al. 2013; Jang et al. 2017 §2.2).
    Not a derivative (the value's is 0 almost everywhere), so it is tested as an estimator."""

    def __init__(self, value):
        self.value = value

    def forward(self, y):
        if self.value.shape != y.shape:
            raise ValueError(f"straight_through: value of shape {self.value.shape} for y of shape {y.shape}")
        return self.value.astype(y.dtype, copy=False)

    def backward(self, gy):
        return gy
