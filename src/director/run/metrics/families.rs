//! Every family `director run` exposes: name, kind and help, as docs/metrics.md lists them.

use crate::metrics::{Family, Kind};

pub const BUILD: Family = Family {
    name: "rs_agent_build",
    kind: Kind::Info,
    help: "The rs-agent build and the daemon's role (director or real_server).",
};

pub const START_TIME: Family = Family {
    name: "rs_agent_start_time_seconds",
    kind: Kind::Gauge,
    help: "When the daemon started, in seconds since the Unix epoch.",
};

pub const PASSES: Family = Family {
    name: "rs_agent_passes",
    kind: Kind::Counter,
    help: "Reconcile passes by kind: full (start, drift timer, after a failure), reload (SIGHUP), health (a verdict flipped).",
};

pub const PASS_FAILURES: Family = Family {
    name: "rs_agent_pass_failures",
    kind: Kind::Counter,
    help: "Reconcile passes that failed, by kind (retried at the next event).",
};

pub const PASS_WRITES: Family = Family {
    name: "rs_agent_pass_netlink_writes",
    kind: Kind::Counter,
    help: "IPVS netlink writes made by passes, by kind.",
};

pub const PASS_SECONDS: Family = Family {
    name: "rs_agent_pass_duration_seconds",
    kind: Kind::Histogram,
    help: "How long reconcile passes took, by kind.",
};

pub const RELOADS: Family = Family {
    name: "rs_agent_reloads",
    kind: Kind::Counter,
    help: "SIGHUP reloads by result: accepted, or refused (the configuration did not load or the kernel refused it; the running one was kept).",
};

pub const LAST_RELOAD: Family = Family {
    name: "rs_agent_last_reload_timestamp_seconds",
    kind: Kind::Gauge,
    help: "When the last reload was asked for, in seconds since the Unix epoch.",
};

pub const ANNOUNCEMENTS: Family = Family {
    name: "rs_agent_announcements",
    kind: Kind::Counter,
    help: "Gratuitous ARP and unsolicited neighbour advertisement packets sent for the VIPs.",
};

pub const SVC_INFO: Family = Family {
    name: "rs_agent_ipvs_service",
    kind: Kind::Info,
    help: "Each IPVS virtual service: its scheduler, and whether it is rs-agent's (owner=rs-agent) or someone else's (owner=foreign).",
};

pub const SVC_CONNS: Family = Family {
    name: "rs_agent_ipvs_service_connections",
    kind: Kind::Counter,
    help: "Connections the IPVS service scheduled.",
};

pub const SVC_INPKTS: Family = Family {
    name: "rs_agent_ipvs_service_incoming_packets",
    kind: Kind::Counter,
    help: "Packets from clients through the IPVS service.",
};

pub const SVC_OUTPKTS: Family = Family {
    name: "rs_agent_ipvs_service_outgoing_packets",
    kind: Kind::Counter,
    help: "Packets from real servers through the IPVS service (none in direct routing).",
};

pub const SVC_INBYTES: Family = Family {
    name: "rs_agent_ipvs_service_incoming_bytes",
    kind: Kind::Counter,
    help: "Bytes from clients through the IPVS service.",
};

pub const SVC_OUTBYTES: Family = Family {
    name: "rs_agent_ipvs_service_outgoing_bytes",
    kind: Kind::Counter,
    help: "Bytes from real servers through the IPVS service (none in direct routing).",
};

pub const SVC_ACTIVE: Family = Family {
    name: "rs_agent_ipvs_service_connections_active",
    kind: Kind::Gauge,
    help: "Active connections of the IPVS service (the sum over its real servers).",
};

pub const SVC_INACTIVE: Family = Family {
    name: "rs_agent_ipvs_service_connections_inactive",
    kind: Kind::Gauge,
    help: "Inactive connections of the IPVS service (the sum over its real servers).",
};

pub const RS_CONNS: Family = Family {
    name: "rs_agent_ipvs_backend_connections",
    kind: Kind::Counter,
    help: "Connections IPVS scheduled to the real server.",
};

pub const RS_INPKTS: Family = Family {
    name: "rs_agent_ipvs_backend_incoming_packets",
    kind: Kind::Counter,
    help: "Packets from clients IPVS forwarded to the real server.",
};

pub const RS_OUTPKTS: Family = Family {
    name: "rs_agent_ipvs_backend_outgoing_packets",
    kind: Kind::Counter,
    help: "Packets from the real server through IPVS (none in direct routing).",
};

pub const RS_INBYTES: Family = Family {
    name: "rs_agent_ipvs_backend_incoming_bytes",
    kind: Kind::Counter,
    help: "Bytes from clients IPVS forwarded to the real server.",
};

pub const RS_OUTBYTES: Family = Family {
    name: "rs_agent_ipvs_backend_outgoing_bytes",
    kind: Kind::Counter,
    help: "Bytes from the real server through IPVS (none in direct routing).",
};

pub const RS_ACTIVE: Family = Family {
    name: "rs_agent_ipvs_backend_connections_active",
    kind: Kind::Gauge,
    help: "Active connections to the real server (as node_ipvs_backend_connections_active).",
};

pub const RS_INACTIVE: Family = Family {
    name: "rs_agent_ipvs_backend_connections_inactive",
    kind: Kind::Gauge,
    help: "Inactive connections to the real server (as node_ipvs_backend_connections_inactive).",
};

pub const RS_WEIGHT: Family = Family {
    name: "rs_agent_ipvs_backend_weight",
    kind: Kind::Gauge,
    help: "The real server's weight in the kernel: the effective one (0 while its check has it quiesced).",
};

pub const SVC_REALS: Family = Family {
    name: "rs_agent_service_real_servers",
    kind: Kind::Gauge,
    help: "Configured real servers of the service by state: up, down, drained (down on a 503), unchecked (no check).",
};

pub const SVC_QUORUM_UP: Family = Family {
    name: "rs_agent_service_quorum_up",
    kind: Kind::Gauge,
    help: "1 while the checked service has its quorum (the weights of its healthy real servers reach quorum, with hysteresis), else 0: then its sorry server serves, if it has one.",
};

pub const CHECK_SECONDS: Family = Family {
    name: "rs_agent_check_duration_seconds",
    kind: Kind::Histogram,
    help: "How long the service's health checks took (all its real servers).",
};

pub const RS_CONFIGURED_WEIGHT: Family = Family {
    name: "rs_agent_real_server_configured_weight",
    kind: Kind::Gauge,
    help: "The real server's weight as configured (the sorry server's while it serves).",
};

pub const RS_STATE: Family = Family {
    name: "rs_agent_real_server_state",
    kind: Kind::Gauge,
    help: "The real server's state (1 for the current one): up, down, drained (down on a 503), unchecked, or sorry (the sorry server, while it serves).",
};

pub const RS_UP: Family = Family {
    name: "rs_agent_real_server_up",
    kind: Kind::Gauge,
    help: "1 when the real server's health check has it up, 0 when down or drained.",
};

pub const CONSECUTIVE_OK: Family = Family {
    name: "rs_agent_check_consecutive_successes",
    kind: Kind::Gauge,
    help: "Successful checks in a row up to the last one (0 after a failure).",
};

pub const CONSECUTIVE_FAILED: Family = Family {
    name: "rs_agent_check_consecutive_failures",
    kind: Kind::Gauge,
    help: "Failed checks in a row up to the last one (0 after a success).",
};

pub const TRANSITIONS: Family = Family {
    name: "rs_agent_real_server_transitions",
    kind: Kind::Counter,
    help: "Verdict changes of the real server, by direction (up, down).",
};

pub const LAST_TRANSITION: Family = Family {
    name: "rs_agent_real_server_last_transition_timestamp_seconds",
    kind: Kind::Gauge,
    help: "When the real server's verdict last changed, in seconds since the Unix epoch.",
};

pub const FAILURES: Family = Family {
    name: "rs_agent_check_failures",
    kind: Kind::Counter,
    help: "Failed checks by reason: refused, connect, timeout, io, status, body, tls, exit_code, command.",
};

pub const LAST_FAILURE: Family = Family {
    name: "rs_agent_check_last_failure_timestamp_seconds",
    kind: Kind::Gauge,
    help: "When the last check failed and why (reason), in seconds since the Unix epoch.",
};

pub const LAST_CHECK_SECONDS: Family = Family {
    name: "rs_agent_check_last_duration_seconds",
    kind: Kind::Gauge,
    help: "How long the real server's last check took.",
};

/// All of them, in the order a scrape gives them.
#[cfg(test)]
pub const ALL: &[&Family] = &[
    &BUILD,
    &START_TIME,
    &PASSES,
    &PASS_FAILURES,
    &PASS_WRITES,
    &PASS_SECONDS,
    &RELOADS,
    &LAST_RELOAD,
    &ANNOUNCEMENTS,
    &SVC_INFO,
    &SVC_CONNS,
    &SVC_INPKTS,
    &SVC_OUTPKTS,
    &SVC_INBYTES,
    &SVC_OUTBYTES,
    &SVC_ACTIVE,
    &SVC_INACTIVE,
    &RS_CONNS,
    &RS_INPKTS,
    &RS_OUTPKTS,
    &RS_INBYTES,
    &RS_OUTBYTES,
    &RS_ACTIVE,
    &RS_INACTIVE,
    &RS_WEIGHT,
    &SVC_REALS,
    &SVC_QUORUM_UP,
    &CHECK_SECONDS,
    &RS_CONFIGURED_WEIGHT,
    &RS_STATE,
    &RS_UP,
    &CONSECUTIVE_OK,
    &CONSECUTIVE_FAILED,
    &TRANSITIONS,
    &LAST_TRANSITION,
    &FAILURES,
    &LAST_FAILURE,
    &LAST_CHECK_SECONDS,
];
