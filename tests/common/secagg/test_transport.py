"""uint32 transport of masked vectors: values survive exactly; what does not fit stays int64; the server's
arithmetic on them is exact for any modulus."""

import numpy as np

from common.secagg.arithmetic import dequantize, exact_addition, exact_subtraction
from common.secagg.transport import narrow_masked


def test_masked_values_survive_the_round_trip():
    arr = np.array([0, 1, 2**31, 2**32 - 1], dtype=np.int64)
    narrow = narrow_masked(arr)
    assert narrow.dtype == np.uint32 and narrow.nbytes == arr.nbytes // 2
    back = exact_addition([narrow], [np.zeros(1, np.uint32)])[0]  # the server's arithmetic is int64
    assert back.dtype == np.int64 and np.array_equal(back, arr)


def test_values_outside_uint32_travel_unchanged():
    for arr in (np.array([2**32], dtype=np.int64), np.array([-1], dtype=np.int64), np.array([0.5])):
        assert narrow_masked(arr) is arr
    assert narrow_masked(np.zeros(0, dtype=np.int64)).dtype == np.uint32


def test_load_ndarray_reads_what_flower_writes():
    from flwr.common import ndarray_to_bytes

    from common.secagg.transport import load_ndarray

    rng = np.random.default_rng(0)
    arrays = [
        rng.integers(0, 2**32, (7, 5), dtype=np.int64).astype(np.uint32),
        rng.normal(size=(3, 4, 2)),
        np.asfortranarray(rng.normal(size=(6, 3)).astype(np.float32)),
        np.array(7, dtype=np.int64),
        np.zeros((0, 3), np.float32),
        np.arange(5, dtype=">i4"),
    ]
    for arr in arrays:
        got = load_ndarray(ndarray_to_bytes(arr))
        assert got.dtype == arr.dtype and got.shape == arr.shape and np.array_equal(got, arr)


def test_load_ndarray_refuses_object_arrays_and_short_data():
    import io

    import pytest

    from common.secagg.transport import load_ndarray

    buf = io.BytesIO()
    np.save(buf, np.array([1, 2, 3], dtype=np.int64))
    with pytest.raises(ValueError):
        load_ndarray(buf.getvalue()[:-8])  # truncated: numpy refuses to read past the end
    header = b"\x93NUMPY\x01\x00" + (118).to_bytes(2, "little")
    body = "{'descr': '|O', 'fortran_order': False, 'shape': (1,), }".ljust(117) + "\n"
    with pytest.raises(ValueError, match="object arrays"):
        load_ndarray(header + body.encode() + bytes(8))


def test_aggregate_is_serialised_as_float32():
    from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays

    from common.secagg.transport import compact_float

    to_parameters = compact_float(ndarrays_to_parameters)
    out = parameters_to_ndarrays(to_parameters([np.array([0.1, -0.25]), np.array([3], np.int64)]))
    assert out[0].dtype == np.float32 and np.allclose(out[0], [0.1, -0.25]) and out[1].dtype == np.int64


def test_apps_install_the_uint32_path():
    import importlib

    import flower_compat

    flower_compat.install_secagg_client()
    flower_compat.install_secagg_server()
    from common.secagg.quantize import reproducible_quantize
    from common.secagg.transport import load_ndarray, load_ndarrays

    mod = importlib.import_module("flwr.client.mod.secure_aggregation.secaggplus_mod")
    wf = importlib.import_module("flwr.server.workflow.secure_aggregation.secaggplus_workflow")
    assert mod.quantize is reproducible_quantize and mod.parameters_to_ndarrays is load_ndarrays
    assert mod.ndarray_to_bytes.sarcofed_compact and wf.bytes_to_ndarray is load_ndarray
    assert wf.ndarrays_to_parameters.sarcofed_compact
    assert (wf.parameters_addition, wf.parameters_subtraction, wf.dequantize) == (
        exact_addition,
        exact_subtraction,
        dequantize,
    )


def test_server_sums_of_uint32_vectors_do_not_wrap():
    # Two sites' uint32 values near 2**32, a larger modulus (2**40): the sum must not wrap at 2**32.
    a, b = np.array([2**32 - 1, 5], np.uint32), np.array([2**32 - 2, 7], np.uint32)
    total = exact_addition([a], [b])[0]
    assert total.dtype == np.int64 and list(total) == [2**33 - 3, 12]
    assert list(exact_subtraction([a], [b])[0]) == [1, -2]
    floats = exact_addition([np.array([0.5])], [np.array([0.25])])[0]
    assert floats.dtype == np.float64 and floats[0] == 0.75


def test_dequantize_is_flowers_bit_for_bit():
    from flwr.common.secure_aggregation.quantization import dequantize as flower_dequantize

    q = [np.random.default_rng(1).integers(0, 2**24, (50, 3)).astype(np.int64), np.array(7, np.int64)]
    for ours, theirs in zip(dequantize(q, 0.5, 4194304), flower_dequantize(q, 0.5, 4194304), strict=True):
        assert ours.dtype == theirs.dtype == np.float64 and np.array_equal(ours, theirs)
