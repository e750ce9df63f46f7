"""One number-formatting module for the pages and the terminal (reports.formatting): a dash for what does not
exist, never "-0.0", p-values a reader decides on, and the environment that renders the pages with them."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest

from reports import formatting as f
from reports.render import ENV


@pytest.mark.parametrize("missing", [None, math.nan, math.inf, -math.inf, "x", True])
def test_a_number_that_does_not_exist_is_a_dash(missing):
    for fmt in (f.fixed, f.count, f.percent, f.points, f.money, f.significant, f.general, f.p_value, f.p_exact):
        assert fmt(missing) == f.DASH, fmt
    assert f.percent(missing, missing="-") == "-" and f.metadata_value(None) == "n/a"


def test_rounding_never_prints_minus_zero():
    assert f.fixed(-0.0001, 2) == "0.00" and f.points(-0.0002) == "+0.0 pp" and f.percent(-0.00001) == "0.0%"
    assert f.money(-0.004, sign=True) == "+0.00" and f.metadata_value(-0.00001) == "0.0000"
    assert f.fixed(-0.006, 2) == "-0.01"


def test_each_kind_of_number():
    assert f.count(12345.4) == "12,345" and f.count(12345, grouping=False) == "12345"
    assert f.percent(0.5934) == "59.3%" and f.percent(0.8, None) == "80%" and f.percent(0.0012, 2) == "0.12%"
    assert f.points(0.031) == "+3.1 pp" and f.points(0.031, unit=False, sign=False) == "3.1"
    assert f.money(1234.5) == "1,234.50" and f.money(-2.2, sign=True) == "-2.20"
    assert f.p_value(0.0483) == "0.048" and f.p_value(1e-9) == "< 0.001" and f.p_exact(1.5e-10) == "1.5e-10"
    assert f.p_is(0.0483) == "= 0.048" and f.p_is(1e-9) == "< 0.001"
    assert f.significant(0.000909) == "0.000909" and f.general(0.05) == "0.05"
    assert f.change_interval(0.018, 0.073, rate=True) == "+1.8 to +7.3 pp"
    assert f.change_interval(-3.81, -0.59, rate=False) == "-3.81 to -0.59"
    assert f.measure_interval(0.57, None, rate=True) == f.DASH
    assert f.metadata_value(120_000) == "120,000" and f.metadata_value(0.83) == "0.8300"
    assert f.metadata_value(123456.7) == "123,457" and f.metadata_value(True) == "True"
    assert f.when(datetime(2026, 12, 20, tzinfo=UTC)) == "2026-12-20 00:00 UTC" == f.when("2026-12-20T00:00:00+00:00")


def test_pages_escape_text_and_refuse_an_unformatted_none():
    page = ENV.from_string("<p>{{ name }} {{ p|p_value }}</p>")
    assert page.render(name='<b>"x" & co</b>', p=1e-5) == "<p>&lt;b&gt;&quot;x&quot; &amp; co&lt;/b&gt; &lt; 0.001</p>"
    with pytest.raises(TypeError, match="unformatted"):
        page.render(name=None, p=0.5)
    assert ENV.from_string("{{ p|p_value }}").render(p=None) == f.DASH
