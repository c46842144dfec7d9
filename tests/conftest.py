"""Suite-wide set-up: keep tiktoken and litellm offline before anything imports them; every
`hybridgw serve` a test starts runs one process unless the test asks for `--workers N`; test reports
whose captured text holds a lone surrogate are made sendable between pytest-xdist workers."""
import os

import pytest

from policies.offline import configure_offline_env

configure_offline_env()
os.environ.setdefault("HYBRIDGW_WORKERS", "1")  # tests read one process's log and signal its pid


def _utf8(text: str) -> str:
    """`text`, with what UTF-8 cannot encode (a lone surrogate a test fed in and a log line echoed) escaped."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> pytest.TestReport:
    # pytest-xdist sends each report to the controller as UTF-8: a lone surrogate in its captured output
    # (tests of bad input log it) stopped the whole run with an INTERNALERROR instead of reporting the test.
    report: pytest.TestReport = yield
    report.sections = [(title, _utf8(text)) for title, text in report.sections]
    if report.longrepr is not None and _utf8(str(report.longrepr)) != str(report.longrepr):
        report.longrepr = _utf8(str(report.longrepr))
    return report
