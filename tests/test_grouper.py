"""Tracker and grouper on sequences of snapshots: start, exit, pid reuse, exec, thread exit."""

from exporter.config import load_config, parse_config
from exporter.grouper import Grouper
from exporter.tracker import Tracker
from procs import proc, snap


def by_name(stats):
    return {s.name: s for s in stats}


def test_tracker_sees_start_exit_reuse_and_exec():
    tracker = Tracker()
    a = proc(10, "a", start_ticks=1)
    ch = tracker.update([a])
    assert ch.first and ch.identities == [(10, 1)] and ch.started == [(10, 1)]
    assert ch.execed == [] and ch.exited == []
    ch = tracker.update([proc(10, "a", start_ticks=1)])  # same identity: nothing changed
    assert not ch.first and (ch.started, ch.execed, ch.exited) == ([], [], [])
    # pid reused (new start): the old identity exits with its last record
    ch = tracker.update([proc(10, "b", start_ticks=9)])
    assert ch.started == [(10, 9)] and [k for k, _ in ch.exited] == [(10, 1)] and ch.execed == []
    # exec: same identity, new comm; the previous record comes along
    ch = tracker.update([proc(10, "c", start_ticks=9)])
    assert [(k, p.comm) for k, p in ch.execed] == [((10, 9), "b")] and ch.started == []
    # state is dropped for identities that are gone
    ch = tracker.update([])
    assert [k for k, _ in ch.exited] == [(10, 9)]
    assert tracker.records == {}


def test_counters_start_at_zero_and_never_decrease_across_exit_reuse_and_thread_exit():
    g = Grouper(load_config(None))
    # already running at the first snapshot: their past is not counted
    w = by_name(g.update(snap(proc(10, "w", cpu_user_seconds=5.0, read_bytes=100, num_threads=4),
                              proc(11, "w", start_ticks=200, cpu_user_seconds=1.0, read_bytes=10))))["w"]
    assert (w.num_procs, w.cpu_user_seconds, w.read_bytes, w.num_threads) == (2, 0.0, 0, 5)
    w = by_name(g.update(snap(proc(10, "w", cpu_user_seconds=5.5, read_bytes=150, num_threads=4),
                              proc(11, "w", start_ticks=200, cpu_user_seconds=1.25, read_bytes=10))))["w"]
    assert (w.cpu_user_seconds, w.read_bytes) == (0.75, 50)
    # 11 exits; 10's threads exit (num_threads drops, its cpu keeps growing)
    w = by_name(g.update(snap(proc(10, "w", cpu_user_seconds=6.0, read_bytes=150, num_threads=1))))["w"]
    assert (w.num_procs, w.cpu_user_seconds, w.read_bytes, w.num_threads) == (1, 1.25, 50, 1)
    # pid 11 reused by a new w, started after the first snapshot: its lifetime counts
    w = by_name(g.update(snap(proc(10, "w", cpu_user_seconds=6.0, read_bytes=150),
                              proc(11, "w", start_ticks=900, cpu_user_seconds=0.25, read_bytes=1))))["w"]
    assert (w.num_procs, w.cpu_user_seconds, w.read_bytes) == (2, 1.5, 51)
    # a counter that goes backwards in the kernel never takes the total down
    w = by_name(g.update(snap(proc(10, "w", cpu_user_seconds=1.0, read_bytes=0),
                              proc(11, "w", start_ticks=900, cpu_user_seconds=0.25, read_bytes=1))))["w"]
    assert (w.cpu_user_seconds, w.read_bytes) == (1.5, 51)


def test_exec_into_another_group_counts_there_only_from_the_exec():
    g = Grouper(load_config(None))
    g.update(snap(proc(1, "sh", cpu_user_seconds=1.0)))
    g.update(snap(proc(1, "sh", cpu_user_seconds=2.0)))
    stats = by_name(g.update(snap(proc(1, "app", cpu_user_seconds=2.5))))
    assert stats["sh"].num_procs == 0 and stats["sh"].cpu_user_seconds == 1.0
    assert stats["app"].num_procs == 1 and stats["app"].cpu_user_seconds == 0.5


def test_empty_group_keeps_counters_but_per_pid_groups_and_remove_empty_go():
    config = parse_config(b"process_names:\n  - name: '{{.Comm}}:{{.PID}}'\n    comm: [p]\n  - comm: [k]\n")
    g = Grouper(config)
    g.update(snap(proc(5, "p", cpu_user_seconds=1.0), proc(6, "k", cpu_user_seconds=2.0)))
    g.update(snap(proc(5, "p", cpu_user_seconds=1.5), proc(6, "k", cpu_user_seconds=4.0)))
    stats = by_name(g.update(snap()))
    assert "p:5" not in stats  # per-pid group dropped once its process is gone
    k = stats["k"]
    assert (k.num_procs, k.cpu_user_seconds, k.rss_bytes, k.oldest_start_time_seconds) == (0, 2.0, 0, None)
    g2 = Grouper(config, remove_empty_groups=True)
    g2.update(snap(proc(6, "k")))
    assert g2.update(snap()) == []


def test_children_follow_their_ancestors_group():
    config = parse_config(b"process_names:\n  - name: svc\n    comm: [supervisor]\n  - comm: [cron]\n")
    procs = [
        proc(1, "init", ppid=0),
        proc(50, "supervisor", ppid=1),
        proc(60, "sh", ppid=50),
        proc(70, "worker", ppid=60),  # grandchild
        proc(40, "cron", ppid=50),  # a child with its own match keeps it
        proc(80, "other", ppid=1),
    ]
    stats = by_name(Grouper(config).update(snap(*procs)))
    assert stats["svc"].num_procs == 3 and stats["cron"].num_procs == 1
    assert set(stats) == {"svc", "cron"}
    stats = by_name(Grouper(config, children=False).update(snap(*procs)))
    assert stats["svc"].num_procs == 1


def test_child_keeps_group_after_reparenting_and_parent_seen_later_in_pid_order():
    config = parse_config(b"process_names:\n  - name: svc\n    comm: [daemon]\n")
    g = Grouper(config)
    # the parent has a higher pid than the child (pid wrap)
    stats = by_name(g.update(snap(proc(900, "daemon"), proc(3, "job", ppid=900))))
    assert stats["svc"].num_procs == 2
    stats = by_name(g.update(snap(proc(3, "job", ppid=1))))  # parent died, job reparented
    assert stats["svc"].num_procs == 1


def test_matching_runs_once_per_identity_and_again_after_exec():
    config = load_config(None)
    calls = []
    original = config.match

    def counting(p):
        calls.append(p.pid)
        return original(p)

    config.match = counting
    g = Grouper(config)
    for _ in range(3):
        g.update(snap(proc(1, "a"), proc(2, "b")))
    assert sorted(calls) == [1, 2]
    stats = by_name(g.update(snap(proc(1, "a"), proc(2, "c"))))  # 2 exec'd into c
    assert sorted(calls) == [1, 2, 2]
    assert stats["c"].num_procs == 1 and stats["b"].num_procs == 0


def test_unreadable_values_are_absent_not_zero():
    g = Grouper(load_config(None))
    s = by_name(g.update(snap(proc(1, "x", read_bytes=None, write_bytes=None, open_fds=None, swap_bytes=None))))["x"]
    assert (s.read_bytes, s.write_bytes, s.open_fds, s.swap_bytes, s.worst_fd_ratio) == (None, None, None, None, None)
    # one readable member is enough for a value
    s = by_name(g.update(snap(proc(1, "x", read_bytes=None, open_fds=None), proc(2, "x", read_bytes=7, open_fds=512))))["x"]
    assert (s.read_bytes, s.open_fds, s.worst_fd_ratio) == (7, 512, 0.5)


def test_states_and_gauges():
    g = Grouper(load_config(None))
    s = by_name(g.update(snap(
        proc(1, "x", state="R", rss_bytes=10, start_time_seconds=5.0),
        proc(2, "x", state="D", rss_bytes=20, start_time_seconds=3.0),
        proc(3, "x", state="Z", rss_bytes=0),
        proc(4, "x", state="I"),
    )))["x"]
    assert s.states == {"Running": 1, "Sleeping": 0, "Waiting": 1, "Zombie": 1, "Other": 1}
    assert s.rss_bytes == 10 + 20 + 0 + 4096 and s.oldest_start_time_seconds == 3.0


def test_memory_does_not_grow_with_churn():
    g = Grouper(parse_config(b"process_names:\n  - name: '{{.PID}}'\n    comm: [t]\n"))
    for i in range(2000):
        g.update(snap(proc(1000 + i, "t", start_ticks=i)))
    assert len(g.tracker.records) == 1 and len(g.groups) == 1 and len(g.group_of) == 1
