"""Tracker and grouper on sequences of readings: start, exit, pid reuse, exec (with and
without a comm change), unreadable stat and io, reload, a failing scrape, churn.

Every accounting rule of exporter/grouper.py's docstring is a test here, plus a random
sequence checked against a model that counts each process' observed growth once."""

import random

import pytest

import exporter.grouper as grouper_module
import exporter.tracker as tracker_module
from exporter.config import load_config, parse_config
from exporter.reader import F, WANT_NOFILE
from procs import BOOT, HZ, FakeReader, exporter, groups, rec, thread

DEFAULT = load_config(None)
BY_COMM = parse_config(b"process_names:\n  - name: '{{.Comm}}'\n    cmdline: ['.*']\n")


def cpu(g):
    return round(g.cpu_user_seconds * HZ)  # back to ticks: exact comparisons


@pytest.fixture(autouse=True, params=["c", "python"])
def sums(request, monkeypatch):
    """Every sequence here runs with the group sums and the tracker's diff in C
    (exporter._reader.group_columns, changed_records) and with their Python twins."""
    if request.param == "c":
        from exporter import _reader  # make test builds it: a failure here, not a skip

        monkeypatch.setattr(grouper_module, "group_columns", _reader.group_columns)
        monkeypatch.setattr(tracker_module, "changed_records", _reader.changed_records)
    else:
        monkeypatch.setattr(grouper_module, "group_columns", grouper_module.group_columns_py)
        monkeypatch.setattr(tracker_module, "changed_records", tracker_module.changed_records_py)
    return request.param


@pytest.fixture(autouse=True, params=["facts", "walk"])
def limits(request, monkeypatch):
    """Every sequence here runs with the fd limits read as facts (the /proc readers) and
    given with each reading's records (the bpf reader)."""
    monkeypatch.setattr(FakeReader, "walk_limits", request.param == "walk")
    return request.param


def test_counters_beyond_64_bits_are_summed_exactly(sums):
    """Context switches summed over a process' threads may pass 2**64 (no C integer holds
    them): the group's total is Python's exact sum, with the C sums as with their twin."""
    r = FakeReader()
    exp = exporter(BY_COMM, r)
    r.put(rec(10, "a", ctxv=2**64 + 5, rss=4096))
    r.put(rec(11, "a", ctxv=7, rss=4096))
    assert groups(exp)["a"].ctx_voluntary == 0  # there at the first scrape: counted from then
    r.put(rec(10, "a", ctxv=2**64 + 9, rss=4096))
    g = groups(exp)["a"]
    assert g.ctx_voluntary == 4 and g.rss_bytes == 8192 and g.num_procs == 2


# -- the tracker ---------------------------------------------------------------------------


def test_tracker_sees_start_exit_reuse_and_exec():
    r = FakeReader()
    exp = exporter(DEFAULT, r)
    tracker = exp.tracker
    r.put(rec(10, "a", start=1))
    step = tracker.step(r.read())
    assert step.first and step.identities == [(10, 1)] and step.started == [(10, 1)]
    assert step.from_now == {(10, 1)} and step.execed == [] and step.exited == []
    tracker.commit(step)
    step = tracker.step(r.read())  # same identity: nothing changed
    assert not step.first and (step.started, step.execed, step.exited) == ([], [], [])
    tracker.commit(step)
    r.remove(10)
    r.put(rec(10, "b", start=9))  # pid reused (new start): the old identity exits
    step = tracker.step(r.read())
    assert step.started == [(10, 9)] and [k for k, _ in step.exited] == [(10, 1)]
    assert step.from_now == set()  # born since the last reading: counts in full
    tracker.commit(step)
    r.put(rec(10, "c", start=9))  # exec: same identity, new comm
    step = tracker.step(r.read())
    assert step.execed == [(10, 9)] and step.started == [] and step.procs[(10, 9)].comm == "c"
    tracker.commit(step)
    r.remove(10)
    step = tracker.step(r.read())
    assert [k for k, _ in step.exited] == [(10, 9)] and step.procs == {} and step.last == {}


def test_exec_keeping_the_comm_is_seen_from_the_mm_addresses():
    r = FakeReader()
    tracker = exporter(DEFAULT, r).tracker
    r.put(rec(7, "python3", mark=0xAAAA), cmdline=("python3", "old.py"))
    tracker.commit(tracker.step(r.read()))
    r.put(rec(7, "python3", mark=0xBBBB), cmdline=("python3", "new.py"))
    step = tracker.step(r.read())
    assert step.execed == [(7, 100)] and step.procs[(7, 100)].cmdline == ("python3", "new.py")
    tracker.commit(step)
    # the mark turning 0 (a zombie, or hidden from us) is no exec; nor its coming back
    for mark in (0, 0xBBBB):
        r.put(rec(7, "python3", mark=mark))
        step = tracker.step(r.read())
        assert step.execed == [] and step.procs[(7, 100)].cmdline == ("python3", "new.py")
        tracker.commit(step)
    assert r.facts_read(7) == 2


def test_static_facts_are_read_once_per_identity_and_the_limit_every_16th_read(limits):
    """Where the reading gives the limits (bpf), none is asked as a fact, and a changed
    limit is seen at the next reading."""
    r = FakeReader()
    tracker = exporter(DEFAULT, r).tracker
    for pid in range(100, 132):
        r.put(rec(pid, "x"), nofile=64)
    for _ in range(33):  # the first read asks everything; 32 more ask each limit twice
        tracker.commit(tracker.step(r.read()))
    assert all(r.facts_read(pid) == 1 for pid in range(100, 132))
    limit_reads = [pid for pid, want in r.asked if want & WANT_NOFILE]
    if limits == "facts":
        assert sorted(limit_reads) == sorted(list(range(100, 132)) * 3)
    else:
        assert limit_reads == []
    assert tracker.nofile[(100, 100)] == 64
    r.facts[(100, 100)] = r.facts[(100, 100)][:3] + (4096,)  # prlimit, no exec
    step = tracker.step(r.read())
    assert step.limits[0] == step.nofile[(100, 100)] == (4096 if limits == "walk" else 64)


def test_a_process_gone_before_its_facts_were_read_is_not_seen():
    r = FakeReader()
    tracker = exporter(DEFAULT, r).tracker
    r.put(rec(5, "brief"))
    reading = r.read()
    r.remove(5)  # exits between the walk and the facts
    step = tracker.step(reading)
    assert step.identities == [] and step.procs == {} and step.started == []


# -- counters --------------------------------------------------------------------------------


def test_counters_start_at_zero_and_never_decrease_across_exit_reuse_and_thread_exit():
    r = FakeReader()
    exp = exporter(DEFAULT, r)
    r.put(rec(10, "w", utime=500, read=100, threads=4))
    r.put(rec(11, "w", start=200, utime=100, read=10))
    w = groups(exp)["w"]  # already running at the first reading: their past is not counted
    assert (w.num_procs, cpu(w), w.read_bytes, w.num_threads) == (2, 0, 0, 5)
    r.put(rec(10, "w", utime=550, read=150, threads=4))
    r.put(rec(11, "w", start=200, utime=125, read=10))
    w = groups(exp)["w"]
    assert (cpu(w), w.read_bytes) == (75, 50)
    r.remove(11)  # 11 exits; 10's threads exit (num_threads drops, its cpu grows)
    r.put(rec(10, "w", utime=600, read=150, threads=1))
    w = groups(exp)["w"]
    assert (w.num_procs, cpu(w), w.read_bytes, w.num_threads) == (1, 125, 50, 1)
    r.put(rec(11, "w", start=900, utime=25, read=1))  # pid reused, born since: counts in full
    w = groups(exp)["w"]
    assert (w.num_procs, cpu(w), w.read_bytes) == (2, 150, 51)
    r.put(rec(10, "w", utime=100, read=0))  # the kernel going backwards never lowers a total
    w = groups(exp)["w"]
    assert (cpu(w), w.read_bytes) == (150, 51)


def test_exec_into_another_group_counts_there_only_from_the_exec():
    r = FakeReader()
    exp = exporter(DEFAULT, r)
    r.put(rec(1, "sh", utime=100))
    groups(exp)
    r.put(rec(1, "sh", utime=200))
    groups(exp)
    r.put(rec(1, "app", utime=250))
    stats = groups(exp)
    assert stats["sh"].num_procs == 0 and cpu(stats["sh"]) == 100
    assert stats["app"].num_procs == 1 and cpu(stats["app"]) == 50


def test_exec_from_no_group_into_one_counts_from_the_exec():
    config = parse_config(b"process_names:\n  - name: app\n    cmdline: ['--serve']\n")
    r = FakeReader()
    exp = exporter(config, r)
    r.put(rec(1, "python3", utime=1000, write=5000, mark=1), cmdline=("python3", "setup.py"))
    assert groups(exp)["app"].num_procs == 0  # named literally: there from the start
    r.put(rec(1, "python3", utime=3000, write=9000, mark=1))
    assert groups(exp)["app"].num_procs == 0
    r.put(rec(1, "python3", utime=3100, write=9500, mark=2), cmdline=("python3", "app.py", "--serve"))
    app = groups(exp)["app"]  # the growth since the last reading, not the 31 s of its life
    assert (app.num_procs, cpu(app), app.write_bytes) == (1, 100, 500)


def test_a_child_caught_between_fork_and_exec_gets_its_own_group_after_the_exec():
    config = parse_config(b"process_names:\n  - name: worker\n    cmdline: ['worker\\.py']\n"
                          b"  - name: shell\n    comm: [bash]\n")
    r = FakeReader()
    exp = exporter(config, r)
    r.put(rec(1, "bash", mark=5), cmdline=("bash",))
    groups(exp)
    r.put(rec(2, "bash", ppid=1, start=300, mark=5), cmdline=("bash",))  # forked, not yet exec'd
    assert groups(exp)["shell"].num_procs == 2
    r.put(rec(2, "bash", ppid=1, start=300, utime=40, mark=9), cmdline=("bash", "worker.py"))
    stats = groups(exp)
    assert stats["shell"].num_procs == 1 and stats["worker"].num_procs == 1
    assert cpu(stats["worker"]) == 40 and cpu(stats["shell"]) == 0


def test_after_a_reload_new_members_count_from_the_reload():
    r = FakeReader()
    exp = exporter(parse_config(b"process_names:\n  - name: db\n    comm: [postgres]\n"), r)
    r.put(rec(1, "postgres", utime=100))
    r.put(rec(2, "nginx", utime=50_000, read=10**9))  # in no group: long history
    groups(exp)
    r.put(rec(1, "postgres", utime=200))
    r.put(rec(2, "nginx", utime=50_100, read=10**9 + 10))
    groups(exp)
    exp.reload(parse_config(b"process_names:\n  - name: db\n    comm: [postgres]\n"
                            b"  - name: web\n    comm: [nginx]\n"))
    r.put(rec(2, "nginx", utime=50_150, read=10**9 + 30))
    stats = groups(exp)
    assert (cpu(stats["web"]), stats["web"].read_bytes) == (50, 20)  # not its lifetime
    assert cpu(stats["db"]) == 100  # the surviving group keeps its total


def test_a_reload_drops_groups_the_new_config_cannot_produce():
    r = FakeReader()
    exp = exporter(parse_config(b"process_names:\n  - name: '{{.Comm}}'\n    comm: [a, b]\n"
                                b"  - name: kept\n    comm: [zzz]\n"), r)
    r.put(rec(1, "a"))
    r.put(rec(2, "b"))
    assert set(groups(exp)) == {"a", "b", "kept"}
    exp.reload(parse_config(b"process_names:\n  - name: '{{.Comm}}'\n    comm: [a]\n"
                            b"  - name: kept\n    comm: [zzz]\n"))
    assert set(groups(exp)) == {"a", "kept"}  # b has no members and no matcher names it
    r.remove(1)
    assert set(groups(exp)) == {"a", "kept"}  # an empty group of a config that still names it stays


def test_default_config_drops_a_group_that_stays_empty_after_the_grace():
    r = FakeReader()  # each read is 15 s after the last
    exp = exporter(DEFAULT, r, empty_grace_seconds=40.0)
    for i in range(50):
        r.put(rec(100 + i, f"job-{i}", start=100 + i))
    r.put(rec(1, "init"))
    assert len(groups(exp)) == 51
    for i in range(50):
        r.remove(100 + i)
    assert len(groups(exp)) == 51  # empty for 0 s
    assert len(groups(exp)) == 51  # 15 s
    assert len(groups(exp)) == 51  # 30 s
    assert set(groups(exp)) == {"init"}  # 45 s >= 40 s


def test_unreadable_stat_keeps_the_identity_and_is_not_counted_twice():
    r = FakeReader()
    exp = exporter(DEFAULT, r)
    r.put(rec(1, "svc", utime=100, read=1000))
    groups(exp)
    r.put(rec(1, "svc", utime=150, read=1500))
    s = groups(exp)["svc"]
    assert (cpu(s), s.read_bytes) == (50, 500)
    r.hide(1)
    result = exp.scrape()
    s = {g.name: g for g in result.groups}["svc"]
    assert s.num_procs == 1 and (cpu(s), s.read_bytes) == (50, 500)  # its last values
    assert result.read_errors.get("EACCES") == 1
    r.put(rec(1, "svc", utime=180, read=1600))
    s = groups(exp)["svc"]
    assert (cpu(s), s.read_bytes) == (80, 600) and r.facts_read(1) == 1


def test_a_pid_unreadable_from_its_first_sight_counts_from_when_it_is_read():
    r = FakeReader()
    exp = exporter(DEFAULT, r)
    r.put(rec(1, "init"))
    groups(exp)
    r.hide(44)  # appears, unreadable: its past is unknown
    groups(exp)
    r.put(rec(44, "old", start=7, utime=9000))
    assert cpu(groups(exp)["old"]) == 0
    r.put(rec(44, "old", start=7, utime=9010))
    assert cpu(groups(exp)["old"]) == 10


def test_io_turning_unreadable_keeps_its_contribution_and_first_readable_counts_from_then():
    r = FakeReader()
    exp = exporter(DEFAULT, r)
    r.put(rec(1, "app", write=10 * 2**20))
    r.put(rec(2, "app", start=50, write=None, read=None))  # another user's: never readable
    groups(exp)
    r.put(rec(1, "app", write=25 * 2**20))
    assert groups(exp)["app"].write_bytes == 15 * 2**20
    r.put(rec(1, "app", write=None, read=None, ctxv=None, ctxnv=None))  # turned non-dumpable
    assert groups(exp)["app"].write_bytes == 15 * 2**20
    r.put(rec(2, "app", start=50, write=7 * 2**20, read=3))  # readable now: from now on
    assert groups(exp)["app"].write_bytes == 15 * 2**20
    r.put(rec(2, "app", start=50, write=8 * 2**20, read=3))
    r.put(rec(1, "app", write=30 * 2**20))  # readable again: its growth since counts
    assert groups(exp)["app"].write_bytes == 21 * 2**20


def test_an_exception_while_grouping_leaves_the_state_as_it_was():
    config = load_config(None)
    r = FakeReader()
    exp = exporter(config, r)
    r.put(rec(1, "a", utime=100))
    groups(exp)
    original, fail = config.match, {"armed": True}

    def exploding(p, redact=True):
        if p.comm == "boom" and fail["armed"]:
            fail["armed"] = False
            raise RuntimeError("template blew up")
        return original(p, redact)

    config.match = exploding
    r.put(rec(1, "a", utime=150))
    r.put(rec(2, "boom", start=300, utime=10))
    with pytest.raises(RuntimeError):
        exp.scrape()
    r.put(rec(1, "a", utime=170))
    stats = groups(exp)  # the next scrape works, as if the failed one never happened
    assert cpu(stats["a"]) == 70 and stats["boom"].num_procs == 1 and cpu(stats["boom"]) == 10


def test_a_failed_first_scrape_leaves_the_next_one_first():
    config = load_config(None)
    r = FakeReader()
    exp = exporter(config, r)
    original = config.match

    def exploding(p, redact=True):
        config.match = original  # once
        raise RuntimeError("boom")

    config.match = exploding
    r.put(rec(1, "old", utime=5000))
    with pytest.raises(RuntimeError):
        exp.scrape()
    assert cpu(groups(exp)["old"]) == 0  # already running at the first good reading


def test_empty_group_keeps_counters_but_per_pid_groups_and_remove_empty_go():
    config = parse_config(b"process_names:\n  - name: '{{.Comm}}:{{.PID}}'\n    comm: [p]\n  - comm: [k]\n")
    r = FakeReader()
    exp = exporter(config, r)
    r.put(rec(5, "p", utime=100))
    r.put(rec(6, "k", utime=200))
    groups(exp)
    r.put(rec(5, "p", utime=150))
    r.put(rec(6, "k", utime=400))
    groups(exp)
    r.remove(5)
    r.remove(6)
    stats = groups(exp)
    assert "p:5" not in stats  # a per-process group goes once its process is gone
    k = stats["k"]
    assert (k.num_procs, cpu(k), k.rss_bytes, k.oldest_start_time_seconds) == (0, 200, 0, None)
    r2 = FakeReader()
    exp2 = exporter(config, r2, remove_empty_groups=True)
    r2.put(rec(6, "k"))
    groups(exp2)
    r2.remove(6)
    assert groups(exp2) == {}


def test_children_follow_their_ancestors_group():
    config = parse_config(b"process_names:\n  - name: svc\n    comm: [supervisor]\n  - comm: [cron]\n")
    for children, svc in ((True, 3), (False, 1)):
        r = FakeReader()
        for pid, comm, ppid in ((1, "init", 0), (50, "supervisor", 1), (60, "sh", 50),
                                (70, "worker", 60), (40, "cron", 50), (80, "other", 1)):
            r.put(rec(pid, comm, ppid=ppid))
        stats = groups(exporter(config, r, children=children))
        assert stats["svc"].num_procs == svc and stats["cron"].num_procs == 1
        assert set(stats) == {"svc", "cron"}


def test_child_keeps_group_after_reparenting_and_parent_seen_later_in_pid_order():
    r = FakeReader()
    exp = exporter(parse_config(b"process_names:\n  - name: svc\n    comm: [daemon]\n"), r)
    r.put(rec(900, "daemon"))
    r.put(rec(3, "job", ppid=900))  # the parent has a higher pid than the child (pid wrap)
    assert groups(exp)["svc"].num_procs == 2
    r.remove(900)
    r.put(rec(3, "job", ppid=1))
    assert groups(exp)["svc"].num_procs == 1


def test_matching_runs_once_per_identity_and_again_after_exec():
    config = load_config(None)
    calls, original = [], config.match

    def counting(p, redact=True):
        calls.append(p.pid)
        return original(p, redact)

    config.match = counting
    r = FakeReader()
    exp = exporter(config, r)
    r.put(rec(1, "a"))
    r.put(rec(2, "b"))
    for _ in range(3):
        groups(exp)
    assert sorted(calls) == [1, 2]
    r.put(rec(2, "c"))
    stats = groups(exp)
    assert sorted(calls) == [1, 2, 2] and stats["c"].num_procs == 1 and stats["b"].num_procs == 0


def test_unreadable_values_are_absent_not_zero():
    r = FakeReader()
    exp = exporter(DEFAULT, r)
    r.put(rec(1, "x", read=None, write=None, fds=None, swap=None))
    s = groups(exp)["x"]
    assert (s.read_bytes, s.write_bytes, s.open_fds, s.swap_bytes, s.worst_fd_ratio) == (None,) * 5
    r.put(rec(2, "x", start=400, read=7, fds=512), nofile=1024)  # one readable member is enough
    s = groups(exp)["x"]
    assert (s.read_bytes, s.open_fds, s.worst_fd_ratio) == (7, 512, 0.5)


def test_states_and_gauges():
    r = FakeReader()
    for pid, state, rss, start in ((1, "R", 10, 500), (2, "D", 20, 300), (3, "Z", 0, 900), (4, "I", 4096, 900)):
        r.put(rec(pid, "x", state=state, rss=rss, start=start))
    s = groups(exporter(DEFAULT, r))["x"]
    assert s.states == {"Running": 1, "Sleeping": 0, "Waiting": 1, "Zombie": 1, "Other": 1}
    assert s.rss_bytes == 10 + 20 + 0 + 4096 and s.oldest_start_time_seconds == BOOT + 3.0


def test_memory_does_not_grow_with_churn():
    r = FakeReader()
    exp = exporter(parse_config(b"process_names:\n  - name: '{{.PID}}'\n    comm: [t]\n"), r)
    for i in range(2000):
        r.remove(1000 + i - 1)
        r.put(rec(1000 + i, "t", start=i))
        groups(exp)
    t, g = exp.tracker, exp.grouper
    assert (len(t.procs), len(t.last), len(t.nofile), len(g.group_of), len(g.base), len(g.reported)) == (1,) * 6
    assert len(r.facts) == 2000  # the fake keeps every identity; the tracker does not


# -- a random sequence against a model ---------------------------------------------------------


@pytest.mark.parametrize("seed", range(8))
def test_random_sequence_counts_each_process_growth_once(seed):
    """Processes start (some unreadable first), grow, exec (with or without a comm
    change), turn unreadable and back, lose and regain io, and exit. The sum over all
    groups of each counter must be what a model gives: per identity, the last value seen
    minus its baseline (0 for a process born after the first reading with the field
    readable, else the first value seen); and no group counter may ever decrease."""
    rng = random.Random(seed)
    r = FakeReader()
    exp = exporter(BY_COMM, r)
    comms = ["a", "b", "c"]
    alive = {}  # pid -> [start, comm, utime, read or None, mark, last read value]
    base, last = {}, {}  # (identity, field) -> baseline / last value seen
    hidden = set()
    next_pid, first, reported = 100, True, {}

    def put(pid):
        start, comm, utime, read, mark, _ = alive[pid]
        r.put(rec(pid, comm, start=start, utime=utime, read=read, mark=mark),
              cmdline=(comm, str(mark)))

    for _ in range(60):
        for _ in range(rng.randint(1, 6)):
            op = rng.random()
            if op < 0.25 or not alive:
                pid, next_pid = next_pid, next_pid + 1
                read = rng.choice([None, rng.randint(0, 50)])
                alive[pid] = [pid * 10, rng.choice(comms), rng.randint(0, 50), read, rng.randint(1, 3),
                              read or 0]
                if rng.random() < 0.2:
                    r.hide(pid)
                    hidden.add(pid)
                else:
                    put(pid)
                continue
            pid = rng.choice(sorted(alive))
            p = alive[pid]
            if op < 0.35:
                r.remove(pid)
                hidden.discard(pid)
                del alive[pid]
            elif op < 0.45:  # exec: a new mark, maybe a new comm
                p[1], p[4] = rng.choice(comms), p[4] + 10
                hidden.discard(pid)
                put(pid)
            elif op < 0.55 and pid not in hidden:
                r.hide(pid)
                hidden.add(pid)
            else:
                p[2] += rng.randint(0, 30)
                if p[3] is not None:
                    p[5] = p[3] = p[3] + rng.randint(0, 30)
                if rng.random() < 0.2:  # io turns unreadable, or readable (never lower)
                    p[3] = None if p[3] is not None else p[5] + rng.randint(0, 30)
                hidden.discard(pid)
                put(pid)
        stats = exp.scrape().groups
        # the model, from what was readable at this reading
        for pid, (start, comm, utime, read, mark, _) in alive.items():
            if pid in hidden:
                continue
            identity = (pid, start)
            born = not first and (identity, "seen") not in base and (identity, "unread") not in base
            base.setdefault((identity, "seen"), True)
            for field, value in (("utime", utime), ("read", read)):
                if value is None:
                    continue
                base.setdefault((identity, field), 0 if born and (identity, field + "-none") not in base else value)
                last[(identity, field)] = value
            if read is None:
                base.setdefault((identity, "read-none"), True)
        for pid in hidden:
            if ((pid, alive[pid][0]), "seen") not in base:
                base.setdefault(((pid, alive[pid][0]), "unread"), True)
        first = False
        for field, attr in (("utime", "cpu_user_seconds"), ("read", "read_bytes")):
            want = sum(v - base[k] for k, v in last.items() if k[1] == field)
            got = sum(round((getattr(g, attr) or 0) * (HZ if field == "utime" else 1)) for g in stats)
            assert got == want, (field, got, want)
        for g in stats:
            for attr in ("cpu_user_seconds", "read_bytes"):
                value = getattr(g, attr)
                if value is not None:
                    assert value >= reported.get((g.name, attr), 0)
                    reported[(g.name, attr)] = value


# -- threads, as process-exporter counts them ------------------------------------------------


def test_threads_sum_context_switches_count_states_and_accumulate_per_thread_name():
    r = FakeReader()
    exp = exporter(DEFAULT, r)
    # the leader's status counts only itself; process-exporter sums task/*/status
    r.put(rec(10, "srv", threads=3, ctxv=5, ctxnv=1, state="S"),
          threads=[thread(10, "srv", "S", utime=10, ctxv=5, ctxnv=1),
                   thread(11, "worker", "R", utime=20, ctxv=100, ctxnv=7, read=4096),
                   thread(12, "worker", "D", utime=30, ctxv=50, ctxnv=2)])
    g = groups(exp)["srv"]
    assert (g.ctx_voluntary, g.ctx_nonvoluntary) == (0, 0)  # from the first scrape on
    # the process' own state and each of its threads' (the leader too), as process-exporter
    assert g.states == {"Running": 1, "Sleeping": 2, "Waiting": 1, "Zombie": 0, "Other": 0}
    assert [(name, count) for name, count, _ in g.threads] == [("srv", 1), ("worker", 2)]
    assert all(counters == (0.0, 0.0, 0, 0, 0, 0, 0, 0) for _, _, counters in g.threads)
    r.put(rec(10, "srv", threads=4, ctxv=6, ctxnv=1),
          threads=[thread(10, "srv", "S", utime=10, ctxv=6, ctxnv=1),
                   thread(11, "worker", "S", utime=25, ctxv=110, ctxnv=7, read=8192),
                   thread(12, "worker", "S", utime=30, ctxv=52, ctxnv=2),
                   thread(13, "worker", "S", utime=99, ctxv=9, ctxnv=9)])  # new: from now
    g = groups(exp)["srv"]
    assert (g.ctx_voluntary, g.ctx_nonvoluntary) == (1 + 10 + 2 + 9, 9)
    worker = dict((name, (count, counters)) for name, count, counters in g.threads)["worker"]
    assert worker == (3, (0.05, 0.0, 0, 0, 12, 0, 4096, 0))
    # a thread name absent for a scrape starts again from 0 (process-exporter's threadAccum)
    r.put(rec(10, "srv", threads=2, ctxv=7, ctxnv=1),
          threads=[thread(10, "srv", "S", utime=10, ctxv=7, ctxnv=1), thread(14, "io", "S", utime=1)])
    g = groups(exp)["srv"]
    assert [(name, count) for name, count, _ in g.threads] == [("io", 1), ("srv", 1)]
    r.put(rec(10, "srv", threads=2, ctxv=7, ctxnv=1),
          threads=[thread(10, "srv", "S", utime=10, ctxv=7, ctxnv=1), thread(15, "worker", "S", utime=5)])
    worker = dict((name, (count, counters)) for name, count, counters in groups(exp)["srv"].threads)["worker"]
    assert worker == (1, (0.0, 0.0, 0, 0, 0, 0, 0, 0))


def test_threads_of_one_name_across_processes_sum_what_each_grew():
    """Processes whose threads all have one name (a worker pool) are summed by column; a
    thread seen for the first time counts, grown by nothing; the group adds its processes."""
    r = FakeReader()
    exp = exporter(DEFAULT, r)
    pool = lambda pid, base, extra=(): [thread(pid + i, "pool", "S", utime=base + i, ctxv=base * i, read=4096 * i)
                                        for i in range(3)] + list(extra)
    r.put(rec(10, "srv", threads=3), threads=pool(10, 10))
    r.put(rec(20, "srv", threads=3), threads=pool(20, 100))
    assert dict((n, c) for n, c, _ in groups(exp)["srv"].threads) == {"pool": 6}
    r.put(rec(10, "srv", threads=4), threads=pool(10, 12, [thread(13, "pool", "S", utime=500, ctxv=500)]))
    r.put(rec(20, "srv", threads=3), threads=pool(20, 101))
    (name, count, counters), = groups(exp)["srv"].threads
    # pid 10: utime +2 each (6), ctxv 2 * (0 + 1 + 2) = 6; pid 20: utime +1 each (3), ctxv 0 + 1 + 2 = 3
    assert (name, count) == ("pool", 7) and counters == ((6 + 3) / HZ, 0.0, 0, 0, 6 + 3, 0, 0, 0)


def test_a_single_threaded_process_has_no_thread_families_and_its_own_states():
    r = FakeReader()
    r.put(rec(10, "one", state="R"), threads=[thread(10, "one", "R")])  # threads=1: not read
    g = groups(exporter(DEFAULT, r))["one"]
    assert g.threads == () and g.states["Running"] == 1 and sum(g.states.values()) == 1


def test_wchans_count_each_member_and_each_thread_of_the_multi_threaded_ones():
    """process-exporter's threads_wchan: a process' own wchan counts, and each thread's of a
    multi-threaded process (so its leader's twice); "0" (running, hidden) and None do not."""
    r = FakeReader()
    r.put(rec(10, "srv", threads=3, wchan="do_epoll_wait"),
          threads=[thread(10, "srv", wchan="do_epoll_wait"), thread(11, "worker", wchan="futex_wait"),
                   thread(12, "worker", "R", wchan="0")])
    r.put(rec(20, "srv", wchan="futex_wait"))
    r.put(rec(30, "srv", state="R", wchan="0"))
    r.put(rec(40, "srv", wchan=None))  # unreadable, or a kernel without wchan
    r.put(rec(50, "other", wchan="do_select"))
    exp = exporter(DEFAULT, r)
    found = groups(exp)
    assert found["srv"].wchans == (("do_epoll_wait", 2), ("futex_wait", 2))
    assert found["other"].wchans == (("do_select", 1),)
    r.remove(50)
    r.put(rec(60, "idle", state="R"))
    found = groups(exp)
    assert found["idle"].wchans == () and found["other"].wchans == ()  # empty now


def test_a_process_whose_facts_came_back_gone_counts_from_when_it_is_seen_again():
    """read_facts can say 'gone' for a live process (its stat unreadable for a moment):
    seen again later, its past is history procsnap did not see."""
    r = FakeReader()
    exp = exporter(DEFAULT, r)
    r.put(rec(1, "init"))
    groups(exp)
    real = r.read_facts
    r.read_facts = lambda requests: ([f._replace(gone=True, cmdline=None) for f in real(requests)[0]], {})
    r.put(rec(50, "old", start=3, utime=5000))
    assert "old" not in groups(exp)
    r.read_facts = real
    r.put(rec(50, "old", start=3, utime=5001))
    assert cpu(groups(exp)["old"]) == 0
    r.put(rec(50, "old", start=3, utime=5003))
    assert cpu(groups(exp)["old"]) == 2


def test_a_group_the_config_names_literally_is_reported_before_any_process_matches():
    config = parse_config(b"process_names:\n  - name: postgres\n    comm: [postgres]\n"
                          b"  - name: '{{.Comm}}'\n    comm: [nginx]\n")
    r = FakeReader()
    exp = exporter(config, r)
    r.put(rec(1, "init"))
    stats = groups(exp)
    assert set(stats) == {"postgres"}  # a templated name waits for a process
    pg = stats["postgres"]
    assert (pg.num_procs, pg.cpu_user_seconds, pg.read_bytes, pg.rss_bytes) == (0, 0.0, 0, 0)
    r.put(rec(5, "postgres", start=300, utime=20))
    assert cpu(groups(exp)["postgres"]) == 20  # born since the last scrape: in full
    r2 = FakeReader()
    r2.put(rec(1, "init"))
    assert groups(exporter(config, r2, remove_empty_groups=True)) == {}


def test_recheck_matches_unnamed_processes_again_within_the_time_limit():
    """-recheck: a process no matcher named is matched again at each scrape (its
    cmdline can change without an exec, e.g. setproctitle); with a time limit, only that
    long after its start."""
    config = parse_config(b"process_names:\n  - name: worker\n    cmdline: ['--role=worker']\n")
    for limit, expected in ((None, 1), (1000.0, 1), (1.0, 0)):
        r = FakeReader()
        r.now = BOOT + 100  # reads 115 s and more after boot; the process started at 1 s
        exp = exporter(config, r, recheck=True, recheck_seconds=limit)
        r.put(rec(5, "app", start=100, utime=10), cmdline=("app",))
        groups(exp)
        r.facts[(5, 100)] = (b"app\0--role=worker\0", None, b"0::/", 1024)  # retitled in place
        r.put(rec(5, "app", start=100, utime=30))
        assert groups(exp)["worker"].num_procs == expected, limit
    r = FakeReader()
    exp = exporter(config, r)  # without recheck: matched once
    r.put(rec(5, "app", start=100), cmdline=("app",))
    groups(exp)
    r.facts[(5, 100)] = (b"app\0--role=worker\0", None, b"0::/", 1024)
    assert groups(exp)["worker"].num_procs == 0


def test_thread_sums_land_on_their_own_process_when_another_is_dropped_in_the_same_step():
    r = FakeReader()
    exp = exporter(DEFAULT, r)
    r.put(rec(1, "init"))
    r.put(rec(30, "srv", threads=2, ctxv=1),
          threads=[thread(30, "srv", ctxv=1), thread(31, "srv", ctxv=10)])
    groups(exp)
    r.put(rec(20, "brief", start=500))  # a lower pid, gone before its facts are read
    real = r.read_facts

    def brief_gone(requests):
        facts, errors = real(requests)
        return [f._replace(gone=True, cmdline=None) if f.pid == 20 else f for f in facts], errors

    r.read_facts = brief_gone
    r.put(rec(30, "srv", threads=2, ctxv=2),
          threads=[thread(30, "srv", ctxv=2), thread(31, "srv", ctxv=15)])
    step = exp.tracker.step(r.read())
    srv = step.last[(30, 100)]
    assert (20, 500) not in step.last and srv[2] == "srv"
    assert srv[F["ctx_voluntary"]] == 17 and step.last[(1, 100)][F["ctx_voluntary"]] == 0


# -- reaped children: CPU and faults of children procsnap never saw ---------------------------

REAP_CONFIG = parse_config("""
process_names:
  - name: "{{.Comm}}"
    comm: [make, cc, sh]
""")


def cpu_seconds(g) -> float:
    return round(g.cpu_user_seconds + g.cpu_system_seconds, 6)


def test_children_never_seen_are_credited_to_the_reaper_from_its_cutime():
    r = FakeReader()
    r.put(rec(10, "make", start=100, utime=50, cutime=7, cstime=1, cminflt=100, cmajflt=2))
    exp = exporter(REAP_CONFIG, r)
    assert cpu_seconds(groups(exp)["make"]) == 0.0  # history before the first scrape is not counted
    # 500 children of 2 ticks each came and went between the scrapes: cutime grew by 1000
    r.put(rec(10, "make", start=100, utime=52, cutime=1007, cstime=201, cminflt=5100, cmajflt=3))
    g = groups(exp)["make"]
    assert (g.cpu_user_seconds, g.cpu_system_seconds) == (0.02 + 10.0, 2.0)
    assert (g.minor_faults, g.major_faults) == (5000, 1)
    r.put(rec(10, "make", start=100, utime=52, cutime=1007, cstime=201, cminflt=5100, cmajflt=3))
    assert cpu_seconds(groups(exp)["make"]) == 12.02  # nothing reaped since: nothing more


def test_a_child_seen_then_reaped_is_counted_once():
    """A long-lived child counted in its own group through several scrapes, then reaped:
    the parent's cutime grows by the child's whole CPU, of which only what the child used
    after the last scrape is new."""
    r = FakeReader()
    r.put(rec(10, "make", start=100))
    exp = exporter(REAP_CONFIG, r)
    groups(exp)
    r.put(rec(20, "cc", start=200, ppid=10, utime=30, cutime=4))  # started after the first scrape
    assert cpu_seconds(groups(exp)["cc"]) == 0.34
    r.put(rec(20, "cc", start=200, ppid=10, utime=60, cutime=4))
    assert cpu_seconds(groups(exp)["cc"]) == 0.64
    r.remove(20)  # it used 5 more ticks, exited, was reaped: make's cutime grows by 69
    r.put(rec(10, "make", start=100, cutime=69))
    found = groups(exp)
    assert cpu_seconds(found["cc"]) == 0.64 and cpu_seconds(found["make"]) == 0.05
    assert round(cpu_seconds(found["cc"]) + cpu_seconds(found["make"]), 6) == 0.69  # the child's whole CPU, once


def test_a_child_whose_parent_exited_too_is_taken_off_the_grandparent():
    r = FakeReader()
    r.put(rec(10, "make", start=100))
    r.put(rec(20, "sh", start=200, ppid=10))
    r.put(rec(30, "cc", start=300, ppid=20, utime=40))
    exp = exporter(REAP_CONFIG, r)
    groups(exp)
    # cc (40 ticks, +2 after the scrape) reaped by sh (+1 tick), sh reaped by make
    r.remove(30)
    r.remove(20)
    r.put(rec(10, "make", start=100, cutime=43))
    found = groups(exp)
    assert cpu_seconds(found["make"]) == 0.03 and cpu_seconds(found["cc"]) == 0.0 and cpu_seconds(found["sh"]) == 0.0


def test_a_reaper_in_no_group_credits_nobody():
    r = FakeReader()
    r.put(rec(1, "init", start=1))  # not grouped by REAP_CONFIG
    r.put(rec(20, "cc", start=200, ppid=1))
    exp = exporter(REAP_CONFIG, r)
    groups(exp)
    r.remove(20)
    r.put(rec(1, "init", start=1, cutime=500))  # an orphan reaped by init
    found = groups(exp)
    assert cpu_seconds(found["cc"]) == 0.0 and "init" not in found


def test_off_counts_as_process_exporter_does():
    r = FakeReader()
    r.put(rec(10, "make", start=100))
    exp = exporter(REAP_CONFIG, r, count_reaped=False)
    groups(exp)
    r.put(rec(10, "make", start=100, utime=1, cutime=1000, cminflt=50))
    g = groups(exp)["make"]
    assert cpu_seconds(g) == 0.01 and g.minor_faults == 0


def test_credits_are_scaled_back_to_what_the_machine_spent():
    """The groups' CPU growth may not exceed the machine's (/proc/stat): the reaped part
    is scaled back by the excess, and counters still never decrease."""
    r = FakeReader()
    r.put(rec(10, "make", start=100))
    r.put(rec(11, "sh", start=110))
    r.cpu_ticks = 10_000
    exp = exporter(REAP_CONFIG, r)
    groups(exp)
    r.put(rec(10, "make", start=100, utime=100, cutime=1000))  # says 1100 ticks
    r.put(rec(11, "sh", start=110, utime=100))
    r.cpu_ticks = 10_000 + 700  # the machine spent 700: 500 too much, all of it reaped credit
    found = groups(exp)
    assert cpu_seconds(found["make"]) == 6.0 and cpu_seconds(found["sh"]) == 1.0 and exp.grouper.reaped_scaled == 1
    r.put(rec(10, "make", start=100, utime=100, cutime=1000))
    r.cpu_ticks += 5
    assert cpu_seconds(groups(exp)["make"]) == 6.0 and exp.grouper.reaped_scaled == 1


def test_reaped_credits_never_make_a_counter_go_down_in_random_sequences():
    rnd = random.Random(13)
    for trial in range(30):
        r = FakeReader()
        exp = exporter(REAP_CONFIG, r)
        alive, last = {}, {}
        next_pid = 100
        for step in range(25):
            for pid in list(alive):
                if rnd.random() < 0.2:
                    del alive[pid]
                    r.remove(pid)
            for _ in range(rnd.randrange(0, 3)):
                next_pid += 1
                alive[next_pid] = [rnd.choice(["make", "cc", "sh"]), rnd.choice([0] + list(alive)), 0, 0]
            for pid, p in alive.items():
                p[2] += rnd.randrange(0, 5)
                p[3] += rnd.randrange(0, 50) if rnd.random() < 0.3 else 0
                r.put(rec(pid, p[0], start=pid, ppid=p[1], utime=p[2], cutime=p[3]))
            r.cpu_ticks = None if rnd.random() < 0.5 else step * rnd.randrange(0, 200)
            for name, g in groups(exp).items():
                total = (g.cpu_user_seconds or 0) + (g.cpu_system_seconds or 0)
                assert total >= last.get(name, 0) - 1e-9, (trial, step, name)
                last[name] = total


# -- safe labels and the cardinality cap -----------------------------------------------------


def test_groups_beyond_max_groups_fold_into_other_and_are_counted(caplog):
    r = FakeReader()
    for pid, comm in ((10, "a"), (11, "b"), (12, "c"), (13, "d")):
        r.put(rec(pid, comm, start=pid, utime=pid))
    exp = exporter(DEFAULT, r, max_groups=3)
    with caplog.at_level("WARNING", logger="procsnap"):
        found = groups(exp)
        groups(exp)
    # three groups, then "other" for the rest (matched once per process: counted once)
    assert sorted(found) == ["a", "b", "c", "other"]
    assert found["other"].num_procs == 1 and exp.grouper.groups_folded == 1
    assert sum("--max-groups=3" in m for m in caplog.messages) == 1  # once, not per scrape


def test_group_names_are_capped_and_secrets_redacted():
    config = parse_config("process_names: [{name: '{{.Matches.rest}}', cmdline: ['run (?P<rest>.*)']}]")
    r = FakeReader()
    r.put(rec(10, "app", start=10), cmdline=("/bin/app", "run", "--password=hunter2", "x" * 5000))
    found = groups(exporter(config, r))
    (name,) = found
    assert "hunter2" not in name and "--password=<redacted>" in name
    assert len(name) == 1024 and name.endswith("\u2026")
    plain = groups(exporter(config, r, redact=False))
    assert any("hunter2" in n for n in plain)  # the opt-out shows it
