"""tests/conftest.py's datasets-line rule: undecided tests are refused, the closest mark wins, the option selects."""

from __future__ import annotations

import textwrap

import pytest

pytest_plugins = ("pytester",)
pytestmark = pytest.mark.datasets_independent("pytest's own collection of a few tiny modules")

CONFTEST = "from tests.conftest import pytest_addoption, pytest_collection_modifyitems  # noqa: F401\n"
INI = """
[pytest]
markers =
    datasets_line: both lines
    datasets_independent(why): the default line only
"""

#: a module of the datasets_line kind, one of the other kind, and one that mixes tests of both kinds
LINE_MODULE = "import pytest\npytestmark = pytest.mark.datasets_line\n\ndef test_a():\n    import datasets\n"
INDEPENDENT_MODULE = 'import pytest\npytestmark = pytest.mark.datasets_independent("pure")\n\ndef test_b():\n    pass\n'
MIXED = """
    import pytest
    pytestmark = pytest.mark.datasets_independent("pure")

    def test_pure():
        # a comment naming load_dataset or IrisLoader is no use of them
        assert 1

    def test_loads():
        from datasets import load_dataset
        load_dataset

    def test_takes_v2(v2):
        pass

    @pytest.mark.datasets_line
    def test_marked():
        import datasets
        datasets.Dataset
"""
#: a datasets_line module with a test that opts out
OPTING_OUT = """
    import pytest
    pytestmark = pytest.mark.datasets_line

    def test_loads():
        import datasets

    @pytest.mark.datasets_independent("argparse only")
    def test_flags():
        pass
"""
WRONGLY_OUT = """
    @pytest.mark.datasets_independent("wrongly")
    def test_wrongly_out(v1):
        pass
"""


def _collect(pytester: pytest.Pytester, **modules: str) -> pytest.RunResult:
    pytester.makeconftest(CONFTEST)
    pytester.makeini(INI)
    pytester.makepyfile(**{name: textwrap.dedent(code) for name, code in modules.items()})
    return pytester.runpytest_inprocess("--collect-only", "-q", "-p", "no:xdist", "-p", "no:cacheprovider")


def test_a_module_without_a_decision_is_refused(pytester: pytest.Pytester):
    result = _collect(pytester, test_undecided="def test_a():\n    pass\n")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*test_undecided.py: say at module level which datasets line its tests need*"])


def test_an_unmarked_test_naming_datasets_in_an_independent_module_is_refused(pytester: pytest.Pytester):
    result = _collect(pytester, test_mixed=MIXED)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*test_mixed.py::test_loads uses '*' but is datasets_independent*"])
    result.stderr.fnmatch_lines(["*test_mixed.py::test_takes_v2 uses fixture v2*"])
    assert "test_pure" not in result.stderr.str() and "test_marked" not in result.stderr.str()


def test_decided_modules_collect_and_the_marker_selects(pytester: pytest.Pytester):
    result = _collect(pytester, test_line=LINE_MODULE, test_independent=INDEPENDENT_MODULE)
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["*2 tests collected*"])
    selected = pytester.runpytest_inprocess("--collect-only", "-q", "-p", "no:xdist", "--datasets-line-only")
    selected.stdout.fnmatch_lines(["test_line.py::test_a", "*1/2 tests collected (1 deselected)*"])


def test_the_closest_mark_wins(pytester: pytest.Pytester):
    result = _collect(pytester, test_opting_out=OPTING_OUT + WRONGLY_OUT)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*test_opting_out.py::test_wrongly_out uses fixture v1 but is datasets_independent*"])
    pytester.makepyfile(test_opting_out=textwrap.dedent(OPTING_OUT))
    selected = pytester.runpytest_inprocess("--collect-only", "-q", "-p", "no:xdist", "--datasets-line-only")
    selected.stdout.fnmatch_lines(["test_opting_out.py::test_loads", "*1/2 tests collected (1 deselected)*"])
