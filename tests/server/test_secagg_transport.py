"""uint32 transport of masked vectors: values survive exactly; what does not fit stays int64."""

import numpy as np

from common.secagg.transport import narrow_masked, widen_masked


def test_masked_values_survive_the_round_trip():
    arr = np.array([0, 1, 2**31, 2**32 - 1], dtype=np.int64)
    narrow = narrow_masked(arr)
    assert narrow.dtype == np.uint32 and narrow.nbytes == arr.nbytes // 2
    back = widen_masked(narrow)
    assert back.dtype == np.int64 and np.array_equal(back, arr)


def test_values_outside_uint32_travel_unchanged():
    for arr in (np.array([2**32], dtype=np.int64), np.array([-1], dtype=np.int64), np.array([0.5])):
        assert narrow_masked(arr) is arr
    assert narrow_masked(np.zeros(0, dtype=np.int64)).dtype == np.uint32
