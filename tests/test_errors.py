"""slifmr_kernels/errors.py: each error is also the built-in exception callers catch."""

import slifmr_kernels as sk


def test_error_hierarchy():
    assert issubclass(sk.InputError, ValueError) and issubclass(sk.InputError, sk.KernelError)
    assert issubclass(sk.InputTypeError, TypeError) and issubclass(sk.InputTypeError, sk.InputError)
    assert issubclass(sk.InputIndexError, IndexError)
    assert issubclass(sk.GraphError, sk.InputError)
    assert issubclass(sk.GraphTypeError, TypeError) and issubclass(sk.GraphTypeError, sk.GraphError)
    assert issubclass(sk.GraphIndexError, IndexError) and issubclass(sk.GraphIndexError, sk.GraphError)
    assert issubclass(sk.BackendUnavailable, RuntimeError)
    assert issubclass(sk.BackendUnavailable, sk.KernelError)
