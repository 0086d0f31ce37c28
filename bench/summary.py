#!/usr/bin/env python3
"""Medians and ratios from bench/ipvs-guest.sh's raw.txt ("RESULT case S tool run us [notes]").

    summary.py RAW
"""

import statistics
import sys
from collections import defaultdict

REALS_PER_SERVICE = 16
BULK_TOOLS = ["rs-agent", "ipvsadm-restore", "keepalived"]
WEIGHT_TOOLS = ["rs-agent", "ipvsadm", "keepalived"]
BULK_TARGET = 0.5  # rs-agent / ipvsadm-restore
WEIGHT_TARGET = 2.0  # rs-agent / one ipvsadm -e


def load(path):
    times, notes, fails, header = defaultdict(list), defaultdict(list), [], []
    with open(path) as f:
        for line in f:
            if line.startswith("#"):
                header.append(line.rstrip())
            if not line.startswith("RESULT "):
                continue
            fields = line.split()
            case, size, tool, run, value = fields[1:6]
            key = (case, int(size), tool)
            if value == "FAIL":
                fails.append(" ".join(fields[1:]))
                continue
            times[key].append(int(value))
            notes[key].extend(fields[6:])
    return times, notes, fails, header


def ms(us):
    return "-" if us is None else "%.0f" % (us / 1000.0)


def median(times, key):
    return statistics.median(times[key]) if times.get(key) else None


def ratio(a, b):
    return "-" if a is None or b is None or b == 0 else "%.2f" % (a / b)


def row(cells):
    return "| " + " | ".join(str(c) for c in cells) + " |"


def main():
    times, notes, fails, header = load(sys.argv[1])
    out = header + [
        "ipvsadm = ipvsadm-restore < file (bulk) or one ipvsadm -e (weight); keepalived = start"
        " until the table is full (bulk) or SIGHUP until the weight shows; medians.",
        "Process start here: " + ", ".join("%s %s ms" % (k[2], ms(median(times, k)))
                                           for k in sorted(times) if k[0] == "start"),
        "",
    ]
    out.append(row(["case", "services x 16", "rs-agent ms", "ipvsadm ms", "keepalived ms",
                    "rs-agent/ipvsadm", "rs-agent/keepalived", "runs"]))
    out.append(row(["---"] * 8))
    ran = set(times) | {(f.split()[0], int(f.split()[1]), f.split()[2]) for f in fails}
    sizes = sorted({k[1] for k in ran if k[0] == "bulk"})
    verdicts = []
    for s in sizes:
        r, i, k = (median(times, ("bulk", s, t)) for t in BULK_TOOLS)
        runs = min(len(times.get(("bulk", s, t), [])) for t in BULK_TOOLS)
        out.append(row(["bulk apply", "%d (%d dests)" % (s, s * REALS_PER_SERVICE),
                        ms(r), ms(i), ms(k), ratio(r, i), ratio(r, k), runs]))
        if r is None:
            verdicts.append("bulk S=%d: rs-agent has no successful run: MISSED" % s)
        elif i is not None:
            ok = r <= BULK_TARGET * i
            verdicts.append("bulk S=%d: rs-agent/ipvsadm-restore %s (target <= %.1f): %s"
                            % (s, ratio(r, i), BULK_TARGET, "MET" if ok else "MISSED"))
    wsizes = sorted({k[1] for k in ran if k[0] == "weight"})
    for s in wsizes:
        i, k = (median(times, ("weight", s, t)) for t in WEIGHT_TOOLS[1:])
        # Two rs-agent paths: the one-shot command, and the daemon's SIGHUP reload.
        for tool, how in [("rs-agent", "director up"), ("rs-agent-reload", "run + SIGHUP")]:
            r = median(times, ("weight", s, tool))
            if r is None and tool == "rs-agent-reload" and ("weight", s, tool) not in ran:
                continue
            runs = min(len(times.get(("weight", s, t), [])) for t in [tool] + WEIGHT_TOOLS[1:])
            out.append(row(["one weight change (%s)" % how,
                            "%d (%d dests)" % (s, s * REALS_PER_SERVICE),
                            ms(r), ms(i), ms(k), ratio(r, i), ratio(r, k), runs]))
            if r is None:
                verdicts.append("weight S=%d %s: no successful run: MISSED" % (s, how))
                continue
            if i is None:
                continue
            ok = r <= WEIGHT_TARGET * i
            seen = sorted(set(n for n in notes.get(("weight", s, tool), [])
                              if n.endswith("write(s)")))
            ok = ok and seen == ["1_IPVS_change(s)_in_1_netlink_write(s)"]
            writes = ", writes %s" % (",".join(seen) or "?")
            verdicts.append("weight S=%d %s: rs-agent/ipvsadm -e %s (target <= %.1f)%s: %s"
                            % (s, how, ratio(r, i), WEIGHT_TARGET, writes,
                               "MET" if ok else "MISSED"))
    out += ["", "Targets:"] + ["  " + v for v in verdicts]
    out += ["", "Every run (microseconds; notes):"]
    for key in sorted(k for k in times if k[0] != "start"):
        out.append("  %-6s S=%-5d %-16s %s  %s" % (key + (" ".join(map(str, times[key])),
                                                     " ".join(sorted(set(notes[key]))))))
    if fails:
        out += ["", "FAILED:"] + ["  " + f for f in fails]
    print("\n".join(out))


if __name__ == "__main__":
    main()
