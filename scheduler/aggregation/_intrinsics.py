"""Two LLVM-level building blocks for the comparator kernels.

Intrinsics emit their instructions straight into the caller's LLVM IR. That matters for
the comparator: written as an inline="always" numba function, numba deep-copies the
caller's IR at every call site, and a few hundred comparators took minutes to compile.
"""

from __future__ import annotations

from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic


@intrinsic
def compare_exchange(typingctx, a, b):
    """(min, max) of two floats as one compare and two selects, which map onto vminps/vmaxps.

    The outputs are always the inputs, possibly swapped (also for NaN): a network of
    these permutes its values and never loses or invents one.
    """
    if not (isinstance(a, types.Float) and a == b):
        return None

    def codegen(context, builder, signature, args):
        x, y = args
        less = builder.fcmp_ordered("<", x, y)
        return context.make_tuple(
            builder, signature.return_type, (builder.select(less, x, y), builder.select(less, y, x))
        )

    return types.UniTuple(a, 2)(a, b), codegen


@intrinsic
def prefetch(typingctx, array, row, col):
    """Ask the cache for the line holding array[row, col] (2-D); no fault, no result.

    A hint only: it lets a kernel that computes between loads keep memory busy meanwhile.
    Must stay out of loops LLVM should vectorize (a call there stops it).
    """
    if not (isinstance(array, types.Array) and array.ndim == 2):
        return None

    def codegen(context, builder, signature, args):
        array_type = signature.args[0]
        view = context.make_array(array_type)(context, builder, args[0])
        pointer = cgutils.get_item_pointer2(
            context, builder, view.data,
            cgutils.unpack_tuple(builder, view.shape), cgutils.unpack_tuple(builder, view.strides),
            array_type.layout, [args[1], args[2]],
        )  # fmt: skip
        byte_pointer = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        llvm_prefetch = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [byte_pointer, i32, i32, i32]), "llvm.prefetch.p0"
        )
        # read (0), keep in all cache levels (3), data cache (1)
        builder.call(llvm_prefetch, [builder.bitcast(pointer, byte_pointer), i32(0), i32(3), i32(1)])
        return context.get_dummy_value()

    return types.none(array, row, col), codegen
