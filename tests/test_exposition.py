"""The fast group renderer writes exactly what prometheus_client's encoders write."""

import random

import pytest
from prometheus_client import generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from prometheus_client.utils import floatToGoString

from exporter.exposition import Families, GroupRenderer, encode_families, go_float
from exporter.families import GROUP_FAMILIES, THREAD_FAMILIES, ScrapeResult, self_families
from exporter.grouper import STATE_NAMES, GroupStats
from helpers import group_families

NASTY = ['a) b (c', 'new\nline', 'back\\slash', 'quote"d', 'cut\ufffd', 'sp ace', 'ünï', '{{x}}', '']


def random_groups(seed: int, count: int, extra_labels=()) -> list:
    rnd = random.Random(seed)

    def maybe(value):
        return None if rnd.random() < 0.2 else value

    groups = []
    for i in range(count):
        name = rnd.choice(NASTY) + str(i)
        groups.append(GroupStats(
            name, rnd.randrange(0, 50),
            maybe(rnd.random() * 10 ** rnd.randrange(0, 9)), maybe(round(rnd.random() * 1e3, 2)),
            maybe(rnd.randrange(0, 10 ** rnd.randrange(1, 14))), maybe(rnd.randrange(0, 10 ** 7)),
            maybe(rnd.randrange(0, 100)), maybe(rnd.randrange(0, 10 ** 9)),
            maybe(rnd.randrange(0, 10 ** 6)), maybe(rnd.randrange(0, 10 ** 6)),
            maybe(rnd.randrange(0, 2 ** 40)), maybe(rnd.randrange(0, 2 ** 47)), maybe(0),
            maybe(rnd.randrange(0, 5000)), maybe(rnd.random()), maybe(1.7e9 + rnd.random() * 1e6),
            maybe(rnd.randrange(1, 300)),
            {s: rnd.randrange(0, 4) for s in STATE_NAMES},
            tuple((rnd.choice(NASTY) + f"t{j}", rnd.randrange(1, 9),
                   (rnd.random() * 100, round(rnd.random(), 2)) + tuple(rnd.randrange(0, 10 ** 9) for _ in range(6)))
                  for j in range(rnd.choice((0, 0, 1, 3)))),
            tuple(sorted((rnd.choice(NASTY) + f"w{j}", rnd.randrange(1, 9)) for j in range(rnd.choice((0, 1, 2))))),
            maybe(rnd.randrange(0, 2 ** 40)), maybe(rnd.randrange(0, 2 ** 30)),
            tuple(rnd.choice(NASTY) for _ in extra_labels),
        ))
    return groups


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("openmetrics", [False, True])
@pytest.mark.parametrize("threads, smaps, extra_labels", [(True, True, ()), (False, False, ()),
                                                         (True, False, ("namespace", "pod", "container")),
                                                         (True, True, ("pod",))])
def test_renderer_matches_prometheus_client(seed, openmetrics, threads, smaps, extra_labels):
    groups = random_groups(seed, 40, extra_labels)
    families = group_families(groups, threads=threads, smaps=smaps, extra_labels=extra_labels)
    reference = (generate_openmetrics if openmetrics else generate_latest)(Families(families))
    if openmetrics:
        reference = reference.removesuffix(b"# EOF\n")
    assert (b"proportionalResident" in reference) is smaps and (b"thread_count" in reference) is threads
    renderer = GroupRenderer(threads, smaps, extra_labels)
    assert b"".join(renderer.render(groups, openmetrics)) == reference
    assert b"".join(renderer.render(groups, openmetrics)) == reference  # with its label cache warm


def test_renderer_leaves_out_families_without_samples_and_empty_input():
    g = GroupStats("x", 1)  # counters and gauges unknown
    text = b"".join(GroupRenderer().render([g])).decode()
    assert "namedprocess_namegroup_num_procs{groupname=\"x\"} 1.0\n" in text
    assert "read_bytes" not in text and "memory_bytes" not in text
    assert GroupRenderer().render([]) == []


def test_name_filter_keeps_families_by_sample_name():
    groups = random_groups(1, 3)
    text = b"".join(GroupRenderer().render(groups, names={"namedprocess_namegroup_cpu_seconds_total",
                                                 "namedprocess_namegroup_num_procs"})).decode()
    helps = [line for line in text.splitlines() if line.startswith("# HELP")]
    assert [h.split()[2] for h in helps] == ["namedprocess_namegroup_num_procs",
                                           "namedprocess_namegroup_cpu_seconds_total"]
    result = ScrapeResult(groups, 3, 0.5, {"EACCES": 2})
    rest = encode_families(self_families(result, "1"), False, {"procsnap_processes"}).decode()
    assert rest == ("# HELP procsnap_processes Number of processes seen in the last snapshot\n"
                    "# TYPE procsnap_processes gauge\nprocsnap_processes 3.0\n")


def test_label_cache_follows_live_groups():
    renderer = GroupRenderer()
    for i in range(100):
        renderer.render([GroupStats(f"p{i}", 1)])
    assert list(renderer._labels) == [("p99", ())]


def test_every_family_is_rendered():
    group = GroupStats("all", 1, 1.0, 2.0, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 0.5, 1.0, 13,
                       threads=(("worker", 2, (1.5, 0.5, 1, 2, 3, 4, 5, 6)),),
                       wchans=(("do_select", 3), ('we"ird', 1)))
    text = b"".join(GroupRenderer().render([group])).decode()
    assert text.count("# TYPE") == len(GROUP_FAMILIES) + len(THREAD_FAMILIES)
    assert ('namedprocess_namegroup_thread_cpu_seconds_total{groupname="all",mode="user",threadname="worker"} 1.5\n'
            in text)
    assert ('namedprocess_namegroup_thread_context_switches_total{ctxswitchtype="voluntary",groupname="all",'
            'threadname="worker"} 3.0\n' in text)
    assert 'namedprocess_namegroup_threads_wchan{groupname="all",wchan="do_select"} 3.0\n' in text
    assert 'namedprocess_namegroup_threads_wchan{groupname="all",wchan="we\\"ird"} 1.0\n' in text
    plain = b"".join(GroupRenderer(threads=False).render([group])).decode()
    # threads_wchan stays without -threads, as in process-exporter
    assert plain.count("# TYPE") == len(GROUP_FAMILIES) and "thread_" not in plain and "threads_wchan{" in plain


def test_go_float_is_float_to_go_string():
    rnd = random.Random(7)
    values = [0, 1, 999999, 1000000, 1000001, 1200000, 10 ** 15, 2 ** 53 - 1, 2 ** 53, 2 ** 64, -5, 0.0, 1.5, 1e-9]
    values += [rnd.randrange(0, 10 ** rnd.randrange(1, 20)) for _ in range(20000)]
    values += [rnd.random() * 10 ** rnd.randrange(-3, 12) for _ in range(2000)]
    assert [go_float(v) for v in values] == [floatToGoString(v) for v in values]
