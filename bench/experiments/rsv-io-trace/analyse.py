#!/usr/bin/env python3
"""Reads a tracefs text trace of capsule-bench rsv-io (see ./run) and says,
for the SCHED_DEADLINE 'periodic' thread: how long each activation waited
from wake-up to running, whether it was throttled (its dl_task_timer armed
while it ran) and for how long, how long it ran per activation and how much
of that was interrupt and softirq time (charged to it: no
CONFIG_IRQ_TIME_ACCOUNTING), and what each CPU did meanwhile."""
import collections
import re
import sys

LINE = re.compile(r'^\s*(.+?)-(\d+)\s+\[(\d+)\]\s+\S+\s+([\d.]+):\s+(\w+):\s+(.*)$')
KV = re.compile(r'(\w+)=(\S+)')


def fields(text):
    return dict(KV.findall(text))


def main(path, late_ms=5.0, show=8):
    events = []
    for line in open(path, errors='replace'):
        m = LINE.match(line)
        if m:
            events.append((float(m.group(4)), int(m.group(3)), int(m.group(2)), m.group(5), m.group(6)))
    if not events:
        print('no events in', path)
        return
    dl_pids = set()
    for ts, cpu, pid, ev, rest in events:
        if ev == 'sched_switch':
            f = fields(rest.split('==>')[1])
            if f.get('next_comm') == 'periodic' and f.get('next_prio') == '-1':
                dl_pids.add(int(f['next_pid']))
    print('SCHED_DEADLINE periodic threads:', sorted(dl_pids) or 'none')
    cur = {}            # cpu -> pid running
    irq_start = {}      # cpu -> ts of irq/softirq entry (outermost)
    depth = collections.Counter()
    irq_time = collections.Counter()    # (cpu, kind) -> s
    irq_in_dl = 0.0                     # irq+softirq time while a DL periodic thread was current
    run_start = {}                      # pid -> ts switched in
    runs = []                           # (pid, cpu, start, end, irq inside)
    cur_irq = collections.Counter()     # cpu -> irq time inside current DL run
    wakes = []                          # (ts, pid, target cpu)
    pending = {}                        # pid -> wake ts
    waits = []                          # (latency, wake ts, pid, cpu woken, cpu run)
    timers = collections.defaultdict(list)  # hrtimer address -> [(start ts, expires s, cpu)]
    dl_timer_addr = set()
    expires = collections.defaultdict(list)  # hrtimer address -> [ts]
    task_time = collections.Counter()   # (cpu, comm) -> s
    comm_of = {}
    last_switch = {}
    softirq_vec = collections.Counter()
    last_event = {}                     # cpu -> ts of its last event
    silent = collections.defaultdict(list)  # cpu -> [(gap s, from ts, task current)] while not idle
    for ts, cpu, pid, ev, rest in events:
        # A busy CPU takes its tick every 4 ms (HZ=250): a longer silence
        # means the CPU did not run at all (its vCPU was stopped).
        if cpu in last_event and cur.get(cpu, 0) != 0 and ts - last_event[cpu] > 0.008:
            silent[cpu].append((ts - last_event[cpu], last_event[cpu], cur.get(cpu)))
        last_event[cpu] = ts
        if ev in ('irq_handler_entry', 'softirq_entry'):
            if depth[cpu] == 0:
                irq_start[cpu] = ts
            depth[cpu] += 1
            if ev == 'softirq_entry':
                softirq_vec[(cpu, fields(rest).get('action', '?'))] += 0  # seen
        elif ev in ('irq_handler_exit', 'softirq_exit'):
            if depth[cpu] > 0:
                depth[cpu] -= 1
                if depth[cpu] == 0 and cpu in irq_start:
                    d = ts - irq_start.pop(cpu)
                    kind = 'irq' if ev == 'irq_handler_exit' else 'softirq'
                    irq_time[(cpu, kind)] += d
                    if kind == 'softirq':
                        softirq_vec[(cpu, fields(rest).get('action', '?'))] += d
                    if cur.get(cpu) in dl_pids:
                        irq_in_dl += d
                        cur_irq[cpu] += d
        elif ev == 'sched_switch':
            before, after = rest.split('==>')
            fb, fa = fields(before), fields(after)
            prev, nxt = int(fb['prev_pid']), int(fa['next_pid'])
            comm_of[nxt] = fa.get('next_comm', '?')
            comm_of[prev] = fb.get('prev_comm', '?')
            if cpu in last_switch:
                task_time[(cpu, comm_of.get(prev, '?') if prev else '<idle>')] += ts - last_switch[cpu]
            last_switch[cpu] = ts
            if prev in dl_pids and prev in run_start:
                runs.append((prev, cpu, run_start.pop(prev), ts, cur_irq[cpu]))
            cur[cpu] = nxt
            if nxt in dl_pids:
                run_start[nxt] = ts
                cur_irq[cpu] = 0.0
                if nxt in pending:
                    w, wcpu = pending.pop(nxt)
                    waits.append((ts - w, w, nxt, wcpu, cpu))
        elif ev == 'sched_waking':
            f = fields(rest)
            p = int(f['pid'])
            if p in dl_pids:
                pending[p] = (ts, int(f.get('target_cpu', '-1')))
        elif ev == 'hrtimer_start':
            f = fields(rest)
            if f.get('function') == 'dl_task_timer' and pid in dl_pids:
                dl_timer_addr.add(f['hrtimer'])
                timers[f['hrtimer']].append((ts, int(f['expires']) / 1e9, cpu))
        elif ev == 'hrtimer_expire_entry':
            f = fields(rest)
            if f.get('function') == 'dl_task_timer':
                expires[f['hrtimer']].append(ts)
    span = events[-1][0] - events[0][0]
    print('trace: %.1f s, %d events' % (span, len(events)))
    for cpu in sorted({c for c, _ in irq_time}):
        print('cpu %d: hard irq %.1f ms, softirq %.1f ms (%.2f %% of the trace)' % (
            cpu, irq_time[(cpu, 'irq')] * 1e3, irq_time[(cpu, 'softirq')] * 1e3,
            100 * (irq_time[(cpu, 'irq')] + irq_time[(cpu, 'softirq')]) / span))
        vec = sorted(((d, a) for (c, a), d in softirq_vec.items() if c == cpu), reverse=True)[:4]
        print('   softirqs: ' + ', '.join('%s %.1f ms' % (a, d * 1e3) for d, a in vec))
        top = sorted(((d, n) for (c, n), d in task_time.items() if c == cpu), reverse=True)[:6]
        print('   ran: ' + ', '.join('%s %.0f ms' % (n, d * 1e3) for d, n in top))
    for cpu in sorted(silent):
        g = sorted(silent[cpu], reverse=True)
        in_dl = [x for x in g if x[2] in dl_pids]
        print('cpu %d: %d silences > 8 ms while busy (no tick: the vCPU did not run), longest %.1f ms, total %.0f ms; '
              '%d of them while the DL thread was current (longest %.1f ms)' % (
                  cpu, len(g), g[0][0] * 1e3, sum(x[0] for x in g) * 1e3, len(in_dl), in_dl[0][0] * 1e3 if in_dl else 0))
    if not dl_pids:
        return
    lens = sorted(e - s for _, _, s, e, _ in runs)
    print('\nDL runs: %d, longest %.3f ms, median %.3f ms; irq+softirq while the DL thread was current: %.1f ms '
          '(charged to its runtime)' % (len(runs), lens[-1] * 1e3 if lens else 0, lens[len(lens) // 2] * 1e3 if lens else 0,
                                        irq_in_dl * 1e3))
    throttles = [(a, t) for a in dl_timer_addr for t in timers[a]]
    print('DL throttles (dl_task_timer armed while the thread ran): %d; replenishments (its timer fired): %d' % (
        len(throttles), sum(len(expires[a]) for a in dl_timer_addr)))
    for a, (t, exp, c) in sorted(throttles, key=lambda x: x[1][0])[:show]:
        print('   at %.6f on cpu %d, throttled until %.6f (%.1f ms)' % (t, c, exp, (exp - t) * 1e3))
    waits.sort(reverse=True)
    late = [w for w in waits if w[0] * 1e3 > late_ms]
    print('\nwake-up -> running: %d activations, %d waited more than %.0f ms, max %.3f ms' % (
        len(waits), len(late), late_ms, waits[0][0] * 1e3 if waits else 0))
    for lat, w, p, wcpu, rcpu in late[:show]:
        print('  woken %.6f (target cpu %d), ran %.1f ms later on cpu %d' % (w, wcpu, lat * 1e3, rcpu))
        # The run before this wake-up: how long, how much of it interrupts.
        prev = [r for r in runs if r[0] == p and r[3] <= w]
        if prev:
            _, c, s, e, irq = prev[-1]
            print('    previous run: cpu %d, %.3f ms, of it irq+softirq %.3f ms' % (c, (e - s) * 1e3, irq * 1e3))
        th = [t for t in throttles if w - 1.0 <= t[1][0] <= w + lat]
        for a, (t, exp, c) in th[-2:]:
            print('    throttled at %.6f until %.6f (%.1f ms)' % (t, exp, (exp - t) * 1e3))
        # What the CPUs ran while it waited.
        busy = collections.Counter()
        active = {}
        for ts, cpu, pid, ev, rest in events:
            if ts < w:
                if ev == 'sched_switch':
                    active[cpu] = (ts, fields(rest.split('==>')[1]).get('next_comm', '?'),
                                   fields(rest.split('==>')[1]).get('next_prio', '?'))
                continue
            if ts > w + lat:
                break
            if ev == 'sched_switch':
                if cpu in active:
                    st, n, pr = active[cpu]
                    busy[(cpu, n, pr)] += ts - max(st, w)
                f = fields(rest.split('==>')[1])
                active[cpu] = (ts, f.get('next_comm', '?'), f.get('next_prio', '?'))
        for cpu, (st, n, pr) in active.items():
            busy[(cpu, n, pr)] += w + lat - max(st, w)
        top = sorted(((d, k) for k, d in busy.items()), reverse=True)[:6]
        print('    meanwhile: ' + ', '.join('cpu %d %s(prio %s) %.1f ms' % (k[0], k[1], k[2], d * 1e3) for d, k in top))


if __name__ == '__main__':
    main(sys.argv[1])
