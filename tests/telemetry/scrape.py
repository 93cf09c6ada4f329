"""Read GET /metrics the way Prometheus does: the official parser, every sample by name
and labels."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
from prometheus_client.parser import text_string_to_metric_families

Key = tuple[str, tuple[tuple[str, str], ...]]


class Samples(dict[Key, float]):
    def get_value(self, name: str, **labels: str) -> float | None:
        return self.get((name, tuple(sorted(labels.items()))))

    def series(self, name: str) -> dict[tuple[tuple[str, str], ...], float]:
        """Every sample of `name`: labels (sorted pairs) -> value."""
        return {labels: value for (n, labels), value in self.items() if n == name}

    def label_values(self, label: str) -> set[str]:
        return {v for (_, labels) in self for k, v in labels if k == label}

    def names(self) -> Iterator[str]:
        return (name for name, _ in self)


def labels(**pairs: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(pairs.items()))


def parse(text: str) -> Samples:
    samples = Samples()
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            key = (s.name, tuple(sorted(s.labels.items())))
            assert key not in samples, f"duplicate sample {key}"
            samples[key] = s.value
    return samples


async def scrape(http: httpx.AsyncClient, url: str) -> Samples:
    r = await http.get(f"{url}/metrics")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain; version=")
    return parse(r.text)
