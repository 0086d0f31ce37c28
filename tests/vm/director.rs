//! Director checks (IPVS services from rs-agent, judged by the client and `ipvsadm -Ln`).
//!
//! Add each check to `CHECKS`; build the cluster with [`crate::guest::Lab::build`] and run
//! rs-agent on its nodes with [`crate::guest::Ctx::agent`].

use crate::Check;

pub const CHECKS: &[Check] = &[];
