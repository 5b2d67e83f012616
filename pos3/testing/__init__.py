"""Test helpers for pos3 and for store authors: local servers, the fault proxy and the store conformance suite.

Under pytest, `pos3.testing.conformance` gets pytest's assertion rewriting
(detailed failure messages) without any setup in the author's conftest.
"""

import sys

if "pytest" in sys.modules:
    sys.modules["pytest"].register_assert_rewrite("pos3.testing.conformance")
