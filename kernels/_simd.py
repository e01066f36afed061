"""Explicit SIMD vectors for the Numba CPU kernels: the handful of operations the
nearest-code search's micro-kernel needs, each one or a few LLVM vector instructions.

LLVM vectorises simple element-wise loops by itself (the other kernels rely on that), but not
a matrix-product micro-kernel: there the accumulators must stay in registers across the inner
loop, which a Numba array cannot promise, and LLVM left it scalar (18 GFLOP/s per core, where
these vectors reach about 230 on an AVX-512 core). A ``Vector`` here is an LLVM vector value:
one register's worth of lanes, kept in registers like any scalar.

  load(a, i)               a[i : i + lanes] of a 1-D contiguous array
  splat(x)                 x in every lane
  fma(a, b, c)             a·b + c, lane by lane: rounded once where the processor has FMA,
                           else a multiply and an add (llvm.fmuladd: no slow software fma)
  lane_indices(start, v)   start, start + 1, …  as int32 lanes, as many as v has
  where_first(a, b, x, y)  per lane: x where a comes before b in argmin's order, else y
  first_minimum(v, k)      (value, index) of v's lane that comes first in argmin's order,
                           given the lanes' indices k: NaN first, then the smallest value,
                           then the lowest index
  lane(v, j)               lane j of v (the tests read vectors with it)
  lane_count(a)            lanes of a vector of a's dtype (a: an array or a dtype)

The vector width is the widest of the processor Numba compiles for: 64 bytes with AVX-512,
32 with AVX, else 16 (SSE, NEON).
"""
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils, config
from numba.core.codegen import get_host_cpu_features
from numba.extending import intrinsic, models, overload, register_model


def _target_has(feature: str) -> bool:
    """Does the processor Numba compiles for have ``feature``? Numba's own rule: the features
    NUMBA_CPU_FEATURES lists when it is set, else the host's (whatever NUMBA_CPU_NAME says),
    less AVX where NUMBA_ENABLE_AVX=0."""
    features = config.CPU_FEATURES
    if features is None:
        features = get_host_cpu_features()      # '' where LLVM cannot read this host's features
    return "+" + feature in features.split(",")


def _target_vector_bytes() -> int:
    if _target_has("avx512f"):
        return 64
    return 32 if _target_has("avx") else 16


VECTOR_BYTES = _target_vector_bytes()


class Vector(types.Type):
    """Numba type of an LLVM vector of ``lanes`` values of ``dtype`` (a Numba scalar type)."""

    def __init__(self, dtype, lanes: int):
        self.dtype, self.lanes = dtype, lanes
        super().__init__(name=f"Vector({dtype} x {lanes})")


@register_model(Vector)
class _VectorModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        element = dmm.lookup(fe_type.dtype).get_value_type()
        super().__init__(dmm, fe_type, ir.VectorType(element, fe_type.lanes))


def lane_count(a) -> int:
    """Lanes in a vector of ``a``'s dtype (``a`` an array or a dtype)."""
    return VECTOR_BYTES // np.dtype(a.dtype if isinstance(a, np.ndarray) else a).itemsize


@overload(lane_count)
def _lane_count_jit(a):
    lanes = VECTOR_BYTES // (a.dtype.bitwidth // 8)
    return lambda a: lanes


def _vector_of(dtype) -> Vector:
    return Vector(dtype, VECTOR_BYTES // (dtype.bitwidth // 8))


def _broadcast(builder, value, vector_type: ir.VectorType):
    one = builder.insert_element(ir.Constant(vector_type, ir.Undefined), value, ir.Constant(ir.IntType(32), 0))
    zeros = ir.Constant(ir.VectorType(ir.IntType(32), vector_type.count), [0] * vector_type.count)
    return builder.shuffle_vector(one, ir.Constant(vector_type, ir.Undefined), zeros)


@intrinsic
def load(typingctx, a, i):
    """a[i : i + lanes], a 1-D C-contiguous float array; no bounds check, as a micro-kernel needs."""
    if not (isinstance(a, types.Array) and a.ndim == 1 and a.layout == "C" and isinstance(i, types.Integer)):
        return None
    vector = _vector_of(a.dtype)

    def codegen(context, builder, signature, args):
        data = context.make_array(signature.args[0])(context, builder, args[0]).data
        pointer = builder.bitcast(builder.gep(data, [args[1]]), context.get_value_type(vector).as_pointer())
        return builder.load(pointer, align=a.dtype.bitwidth // 8)        # unaligned: element alignment only
    return vector(a, i), codegen


@intrinsic
def splat(typingctx, x):
    if not isinstance(x, types.Float):
        return None
    vector = _vector_of(x)

    def codegen(context, builder, signature, args):
        return _broadcast(builder, args[0], context.get_value_type(vector))
    return vector(x), codegen


@intrinsic
def fma(typingctx, a, b, c):
    if not (isinstance(a, Vector) and a == b == c):
        return None

    def codegen(context, builder, signature, args):
        vector_type = args[0].type
        bits = 32 if vector_type.element == ir.FloatType() else 64
        function = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vector_type, [vector_type] * 3),
                                                  f"llvm.fmuladd.v{vector_type.count}f{bits}")
        return builder.call(function, args)
    return a(a, b, c), codegen


@intrinsic
def lane_indices(typingctx, start, like):
    if not (isinstance(start, types.Integer) and isinstance(like, Vector)):
        return None
    vector = Vector(types.int32, like.lanes)

    def codegen(context, builder, signature, args):
        vector_type = context.get_value_type(vector)
        first = context.cast(builder, args[0], start, types.int32)
        return builder.add(_broadcast(builder, first, vector_type), ir.Constant(vector_type, list(range(like.lanes))))
    return vector(start, like), codegen


@intrinsic
def where_first(typingctx, a, b, x, y):
    """x where a_j < b_j or (a_j is NaN and b_j is not), else y: argmin's order, in which the
    first NaN wins. Applied to later candidates a, it keeps the earlier of equal values."""
    if not (isinstance(a, Vector) and a == b and isinstance(x, Vector) and x == y and a.lanes == x.lanes):
        return None

    def codegen(context, builder, signature, args):
        a, b, x, y = args
        below_or_nan = builder.fcmp_unordered("<", a, b)          # a < b, or either is NaN
        b_is_number = builder.fcmp_ordered("ord", b, b)
        return builder.select(builder.and_(below_or_nan, b_is_number), x, y)
    return x(a, b, x, y), codegen


@intrinsic
def first_minimum(typingctx, v, k):
    if not (isinstance(v, Vector) and isinstance(k, Vector) and k.dtype == types.int32 and v.lanes == k.lanes):
        return None
    result = types.Tuple([v.dtype, types.int32])

    def codegen(context, builder, signature, args):
        values, indices = args
        module, int_type = builder.module, indices.type

        def reduce(name, vector, element):
            function = cgutils.get_or_insert_function(module, ir.FunctionType(element, [vector.type]),
                                                      f"llvm.vector.reduce.{name}.v{v.lanes}{vector.type.element.intrinsic_name}")
            return builder.call(function, [vector])

        is_nan = builder.fcmp_unordered("uno", values, values)
        any_nan = reduce("or", is_nan, ir.IntType(1))
        smallest = reduce("fmin", values, values.type.element)          # NaN only if every lane is NaN
        ties = builder.fcmp_ordered("==", values, _broadcast(builder, smallest, values.type))
        chosen = builder.select(any_nan, is_nan, ties)
        none = ir.Constant(int_type, [2**31 - 1] * v.lanes)
        index = reduce("smin", builder.select(chosen, indices, none), ir.IntType(32))
        nan = ir.Constant(values.type.element, float("nan"))
        value = builder.select(any_nan, nan, smallest)
        return context.make_tuple(builder, signature.return_type, [value, index])
    return result(v, k), codegen


@intrinsic
def lane(typingctx, v, j):
    if not (isinstance(v, Vector) and isinstance(j, types.Integer)):
        return None

    def codegen(context, builder, signature, args):
        return builder.extract_element(args[0], args[1])
    return v.dtype(v, j), codegen
