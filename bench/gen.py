#!/usr/bin/env python3
"""Equivalent IPVS tables for the director benchmark, in three dialects.

    gen.py S OUTDIR

writes, for S services x 16 real servers (DR, rr, weight 1):
    rs-agent.toml        rs-agent `director up` config
    rs-agent-w.toml      the same with one weight changed (first service, first real -> 5)
    ipvs.restore         `ipvsadm-restore` input (the same table)
    keepalived.conf      keepalived virtual_server blocks, real servers without checkers
    keepalived-w.conf    the same with the one weight changed
    weight-change        "VIP:PORT RS:PORT" of the changed destination

Only documentation addresses: VIPs 192.0.2.1..4 x ports 1..ceil(S/4);
real servers 198.51.100.2..9 and 203.0.113.2..9 on the service's port (direct routing
cannot rewrite ports: keepalived resets a differing port and the kernel ignores it).
"""

import os
import sys

VIPS = ["192.0.2.%d" % i for i in range(1, 5)]
REALS = ["198.51.100.%d" % i for i in range(2, 10)] + ["203.0.113.%d" % i for i in range(2, 10)]
CHANGED_WEIGHT = 5


def services(count):
    """(vip, port) for `count` services: distinct ports on a few VIPs."""
    per_vip = (count + len(VIPS) - 1) // len(VIPS)
    out = []
    for vip in VIPS:
        for port in range(1, per_vip + 1):
            if len(out) == count:
                return out
            out.append((vip, port))
    return out


def weight(svc_index, real_index, changed):
    return CHANGED_WEIGHT if changed and svc_index == 0 and real_index == 0 else 1


def rs_agent(svcs, changed):
    """The compact form: real servers with the defaults (dr, weight 1) in a `reals` list, any
    other weight as a [[director.service.real]] table (what an operator would write)."""
    lines = ["[director]", 'interface = "eth0"', "garp_count = 0", ""]
    for i, (vip, port) in enumerate(svcs):
        plain = ['"%s:%d"' % (real, port) for j, real in enumerate(REALS) if weight(i, j, changed) == 1]
        lines += [
            "[[director.service]]",
            'vip = "%s"' % vip,
            "port = %d" % port,
            'scheduler = "rr"',
            "reals = [%s]" % ", ".join(plain),
            "",
        ]
        for j, real in enumerate(REALS):
            if weight(i, j, changed) != 1:
                lines += [
                    "[[director.service.real]]",
                    'address = "%s:%d"' % (real, port),
                    "weight = %d" % weight(i, j, changed),
                    "",
                ]
    return "\n".join(lines)


def ipvsadm_restore(svcs):
    lines = []
    for vip, port in svcs:
        lines.append("-A -t %s:%d -s rr" % (vip, port))
        for real in REALS:
            lines.append("-a -t %s:%d -r %s:%d -g -w 1" % (vip, port, real, port))
    return "\n".join(lines) + "\n"


def keepalived(svcs, changed):
    lines = ["global_defs {", "    router_id bench", "}", ""]
    for i, (vip, port) in enumerate(svcs):
        lines += [
            "virtual_server %s %d {" % (vip, port),
            "    delay_loop 60",
            "    lb_algo rr",
            "    lb_kind DR",
            "    protocol TCP",
        ]
        for j, real in enumerate(REALS):
            # No checker: keepalived considers the real server alive and adds it at once.
            lines.append(
                "    real_server %s %d { weight %d }" % (real, port, weight(i, j, changed))
            )
        lines += ["}", ""]
    return "\n".join(lines)


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: gen.py SERVICES OUTDIR")
    count, outdir = int(sys.argv[1]), sys.argv[2]
    if not 1 <= count <= 4 * 65535:
        sys.exit("SERVICES must be between 1 and %d" % (4 * 65535))
    os.makedirs(outdir, exist_ok=True)
    svcs = services(count)
    files = {
        "rs-agent.toml": rs_agent(svcs, False),
        "rs-agent-w.toml": rs_agent(svcs, True),
        "ipvs.restore": ipvsadm_restore(svcs),
        "keepalived.conf": keepalived(svcs, False),
        "keepalived-w.conf": keepalived(svcs, True),
        "weight-change": "%s:%d %s:%d\n" % (svcs[0][0], svcs[0][1], REALS[0], svcs[0][1]),
    }
    for name, text in files.items():
        with open(os.path.join(outdir, name), "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
