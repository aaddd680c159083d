"""Exposition: the group families written as text, fast.

prometheus_client spends about 2.4 µs building and 5.1 µs serializing each sample: with
one group per process that is half a second at 5000 processes. Here the
namedprocess_namegroup_* samples are written straight from GroupStats: each group's label
text is escaped once and kept while the group lives, each family's HELP/TYPE header is
rendered once per format by prometheus_client itself, and values are formatted by its
``floatToGoString``. The result is byte for byte what prometheus_client's encoders give
for the same families built as prometheus_client objects (the tests hold the two equal), in the
Prometheus text format or OpenMetrics; the few other families (procsnap's own, the
process/platform/gc collectors) still go through prometheus_client's encoders.
"""

from __future__ import annotations

from typing import Iterable, Optional, Sequence

from prometheus_client import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.utils import floatToGoString

from exporter.families import PREFIX, empty_family, family_specs


class Families:
    """The minimal 'registry' prometheus_client's encoders take: something to collect()."""

    def __init__(self, families: Iterable):
        self.families = list(families)

    def collect(self):
        return self.families


def encode_families(families: list, openmetrics: bool, names: Optional[set] = None) -> bytes:
    """prometheus_client families through its own encoder; ``names`` keeps only the samples
    with those names (as its restricted registry does)."""
    if names is not None:
        families = [m for m in (_restrict(f, names) for f in families) if m is not None]
    return (generate_openmetrics if openmetrics else generate_latest)(Families(families))


def _restrict(family: Metric, names: set) -> Optional[Metric]:
    samples = [s for s in family.samples if s.name in names]
    if not samples:
        return None
    restricted = Metric(family.name, family.documentation, family.type, family.unit)
    restricted.samples = samples
    return restricted


_EXACT_INT = 2**53  # below it float(v) is exact, and repr(float(v)) is str(v) + ".0"


def go_float(value) -> str:
    """floatToGoString(value), with a fast path for the ints most samples are."""
    if type(value) is int and 0 <= value < _EXACT_INT:
        digits = str(value)
        if len(digits) <= 6:
            return digits + ".0"
        # floatToGoString turns repr "1234567.0" into Go's "1.234567e+06"
        return f"{(digits[0] + '.' + digits[1:] + '0').rstrip('0.')}e+{len(digits) - 1:02d}"
    return floatToGoString(value)


def escape_label_value(value: str) -> str:
    """As prometheus_client escapes label values (both formats)."""
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _header(spec, openmetrics: bool) -> str:
    """HELP and TYPE lines of one family, exactly as prometheus_client writes them."""
    if openmetrics:
        return generate_openmetrics(Families([empty_family(spec)])).decode().removesuffix("# EOF\n")
    return generate_latest(Families([empty_family(spec)])).decode()


def _sample_parts(spec, label_names: tuple) -> tuple:
    """Per part: (getter, sample name + "{", the part's own label pair, where it goes among
    the group's sorted label names: their count before it). Labels are sorted by name, as
    prometheus_client sorts them."""
    sample = PREFIX + spec.name + ("_total" if spec.kind == "counter" else "") + "{"
    parts = []
    for label_value, get in spec.parts:
        if spec.label is None:
            parts.append((get, sample, "", len(label_names)))
        else:
            pair = f'{spec.label}="{escape_label_value(label_value)}"'
            parts.append((get, sample, pair, sum(name < spec.label for name in label_names)))
    return tuple(parts)


class _GroupLabels:
    """A group's label pairs (groupname and the extra labels), escaped and sorted, and the
    text on either side of a part's own label at each position, made once per group."""

    __slots__ = ("pairs", "_sides")

    def __init__(self, pairs: list):
        self.pairs = pairs  # [(name, escaped value)] sorted by name
        self._sides: dict = {}

    def sides(self, position: int, own: bool) -> tuple:
        """(text before, text after) the part's label at ``position`` (``own``: it has one)."""
        key = (position, own)
        found = self._sides.get(key)
        if found is None:
            texts = [f'{k}="{v}"' for k, v in self.pairs]
            left, right = ",".join(texts[:position]), ",".join(texts[position:])
            if own:
                left, right = left + "," if left else "", "," + right if right else ""
            found = self._sides[key] = (left, right)
        return found


class GroupRenderer:
    """Writes [GroupStats] as the namedprocess_namegroup_* families. One per exporter; the
    label cache follows the groups of the last render, so it does not grow with churn."""

    def __init__(self, threads: bool = True, smaps: bool = False, extra_labels: tuple = ()):
        """``threads``: also the per-thread-name families (process-exporter's -threads);
        ``smaps``: also the proportional memtypes (-gather-smaps); ``extra_labels``: the
        names of GroupStats.labels (config extra_labels)."""
        specs = family_specs(threads, smaps)
        self.extra_labels = tuple(extra_labels)
        names = tuple(sorted(("groupname",) + self.extra_labels))
        self._families = [
            (spec, {False: _header(spec, False), True: _header(spec, True)},
             None if spec.per_item else _sample_parts(spec, names))
            for spec in specs
        ]
        self._labels: dict = {}

    @staticmethod
    def sample_names(spec) -> set:
        name = PREFIX + spec.name
        return {name + "_total", name} if spec.kind == "counter" else {name}

    def _group_labels(self, g, known: dict) -> _GroupLabels:
        key = (g.name, g.labels)
        found = known.get(key)
        if found is None:
            pairs = [("groupname", g.name)] + list(zip(self.extra_labels, g.labels))
            found = _GroupLabels(sorted((k, escape_label_value(v)) for k, v in pairs))
        return found

    def render(self, groups: Sequence, openmetrics: bool = False, names: Optional[set] = None) -> list:
        """The group families as exposition text (OpenMetrics without its '# EOF' line), a
        list of UTF-8 chunks, one per family, so a large exposition is never copied whole.
        ``names`` keeps only families with one of these sample names (``?name[]=``)."""
        known = self._labels
        labels = {(g.name, g.labels): self._group_labels(g, known) for g in groups}
        self._labels = labels
        fmt = go_float
        chunks = []
        for spec, headers, parts in self._families:
            if names is not None and not (self.sample_names(spec) & names):
                continue
            lines = [headers[openmetrics]]
            append = lines.append
            if spec.per_item:
                _item_lines(spec, groups, labels, append)
            else:
                for g in groups:
                    label = labels[(g.name, g.labels)]
                    for get, sample, pair, position in parts:
                        value = get(g)
                        if value is not None:
                            left, right = label.sides(position, bool(pair))
                            append(f"{sample}{left}{pair}{right}}} {fmt(value)}\n")
            if len(lines) > 1:
                chunks.append("".join(lines).encode())
        return chunks


def _item_lines(spec, groups, labels: dict, append) -> None:
    """The samples of a family with one sample set per item of a group (few: threads of
    multi-threaded processes, wchans), labels sorted by name as prometheus_client writes
    them."""
    sample = PREFIX + spec.name + ("_total" if spec.kind == "counter" else "")
    item_label, items_of = spec.per_item
    for g in groups:
        group_pairs = labels[(g.name, g.labels)].pairs
        for item in items_of(g):
            for label_value, get in spec.parts:
                pairs = group_pairs + [(item_label, escape_label_value(item[0]))]
                if spec.label is not None:
                    pairs.append((spec.label, escape_label_value(label_value)))
                text = ",".join(f'{k}="{v}"' for k, v in sorted(pairs))
                append(f"{sample}{{{text}}} {go_float(get(item))}\n")
