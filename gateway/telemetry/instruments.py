"""Counters, gauges and histograms that cost tens of nanoseconds: plain numbers, no locks.

prometheus_client's instruments take a lock on every `inc()` and `observe()` (and a histogram walks
its buckets in Python). The gateway records on one thread, the event loop's, and is scraped on that
same thread, so plain ints and floats are exact; `collect()` builds the metric families at scrape
time, in the same names, types, labels and samples as prometheus_client's own. Not for use from
other threads.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable, Sequence

from prometheus_client.metrics_core import Metric
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

__all__ = [
    "Counter",
    "CounterSeries",
    "Gauge",
    "Histogram",
    "HistogramSeries",
    "LabelledGauge",
]

# How prometheus_client writes a bucket's bound (`le`): "0.0005", "1.0", "+Inf" (untyped there).
_go_float: Callable[[float], str] = floatToGoString


class _Family:
    _type = ""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str] = ()) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)

    def _check(self, values: tuple[str, ...]) -> dict[str, str]:
        if len(values) != len(self.labelnames):
            raise ValueError(f"{self.name} takes labels {self.labelnames}, got {values}")
        return dict(zip(self.labelnames, map(str, values), strict=True))

    def _metric(self) -> Metric:
        return Metric(self.name, self.documentation, self._type)


class CounterSeries:
    """One counter (one combination of label values)."""

    __slots__ = ("created", "labels", "value")

    def __init__(self, labels: dict[str, str]) -> None:
        self.labels = labels
        self.value = 0.0
        self.created = time.time()

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount


class Counter(_Family):
    """`labels(*values).inc()`, or `inc()` without labels; exposed as `<name>_total`."""

    _type = "counter"

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str] = ()) -> None:
        super().__init__(name, documentation, labelnames)
        self._series: dict[tuple[str, ...], CounterSeries] = {}
        if not self.labelnames:
            self._series[()] = CounterSeries({})

    def labels(self, *values: str) -> CounterSeries:
        series = self._series.get(values)
        if series is None:
            series = self._series[values] = CounterSeries(self._check(values))
        return series

    def inc(self, amount: float = 1.0) -> None:
        self._series[()].value += amount

    def collect(self) -> Metric:
        metric = self._metric()
        for s in list(self._series.values()):
            metric.samples.append(Sample(self.name + "_total", s.labels, s.value))
        for s in list(self._series.values()):
            metric.samples.append(Sample(self.name + "_created", s.labels, s.created))
        return metric


class HistogramSeries:
    """One histogram: a count per bucket (not cumulative until a scrape), the sum."""

    __slots__ = ("_bounds", "counts", "created", "labels", "sum")

    def __init__(self, labels: dict[str, str], bounds: tuple[float, ...]) -> None:
        self.labels = labels
        self._bounds = bounds
        self.counts = [0] * len(bounds)
        self.sum = 0.0
        self.created = time.time()

    def observe(self, value: float) -> None:
        # The first bucket whose upper bound is >= value (le is inclusive); the last is +Inf.
        self.counts[bisect_left(self._bounds, value)] += 1
        self.sum += value


class Histogram(_Family):
    """`labels(*values).observe(seconds)`, or `observe(seconds)` without labels."""

    _type = "histogram"

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        *,
        buckets: Sequence[float],
    ) -> None:
        super().__init__(name, documentation, labelnames)
        bounds = sorted(float(b) for b in buckets)
        if bounds[-1] != float("inf"):
            bounds.append(float("inf"))
        self._bounds = tuple(bounds)
        self._le = tuple(_go_float(b) for b in bounds)
        self._series: dict[tuple[str, ...], HistogramSeries] = {}
        if not self.labelnames:
            self._series[()] = HistogramSeries({}, self._bounds)

    def labels(self, *values: str) -> HistogramSeries:
        series = self._series.get(values)
        if series is None:
            series = self._series[values] = HistogramSeries(self._check(values), self._bounds)
        return series

    def observe(self, value: float) -> None:
        self._series[()].observe(value)

    def collect(self) -> Metric:
        metric = self._metric()
        samples = metric.samples
        for s in list(self._series.values()):
            total = 0
            for le, count in zip(self._le, s.counts, strict=True):
                total += count
                samples.append(Sample(self.name + "_bucket", {**s.labels, "le": le}, total))
            samples.append(Sample(self.name + "_count", s.labels, total))
            samples.append(Sample(self.name + "_sum", s.labels, s.sum))
        for s in list(self._series.values()):
            samples.append(Sample(self.name + "_created", s.labels, s.created))
        return metric


class Gauge(_Family):
    """A value without labels that goes up and down."""

    _type = "gauge"

    def __init__(self, name: str, documentation: str) -> None:
        super().__init__(name, documentation)
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount

    def dec(self, amount: float = 1.0) -> None:
        self.value -= amount

    def collect(self) -> Metric:
        metric = self._metric()
        metric.samples.append(Sample(self.name, {}, self.value))
        return metric


class GaugeSeries:
    """One gauge of a labelled family: a value that is set."""

    __slots__ = ("labels", "value")

    def __init__(self, labels: dict[str, str]) -> None:
        self.labels = labels
        self.value = 0.0


class LabelledGauge(_Family):
    """`labels(*values).value = x`: a gauge per combination of labels (a target's state)."""

    _type = "gauge"

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str]) -> None:
        super().__init__(name, documentation, labelnames)
        self._series: dict[tuple[str, ...], GaugeSeries] = {}

    def labels(self, *values: str) -> GaugeSeries:
        series = self._series.get(values)
        if series is None:
            series = self._series[values] = GaugeSeries(self._check(values))
        return series

    def collect(self) -> Metric:
        metric = self._metric()
        for s in list(self._series.values()):
            metric.samples.append(Sample(self.name, s.labels, s.value))
        return metric
