//! `director import`: another balancer's configuration → the equivalent `[director]` TOML,
//! so a director moves over in one step. Three sources, each a private submodule behind
//! this façade: `ipvsadm` (`ipvsadm-save -n` output), `keepalived` (keepalived.conf and its
//! includes) and `ldirectord` (ldirectord.cf). Each is all or nothing: the whole document is
//! built (`document`) and validated as `director up` would read it before the caller prints
//! a byte of it, so a failed import never leaves half a config behind a `>`. Every error
//! names the input `file:line:col`; what rs-agent cannot carry yet is one warning per item
//! (`file:line: ...`), never dropped silently.

mod document;
mod ipvsadm;
mod keepalived;
mod ldirectord;

pub use ipvsadm::ipvsadm_save_to_toml;
#[cfg(test)]
pub(crate) use keepalived::keepalived_text_to_toml;
pub use keepalived::keepalived_to_toml;
#[cfg(test)]
pub(crate) use ldirectord::ldirectord_text_to_toml;
pub use ldirectord::ldirectord_to_toml;

use crate::config_file::{check_ifname, ConfigError};

/// An imported configuration: the TOML, and one warning per thing the input holds that
/// the TOML does not carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imported {
    pub toml: String,
    pub warnings: Vec<String>,
}

/// The `--interface` value, checked before anything is read.
fn check_interface(interface: &str) -> Result<(), ConfigError> {
    check_ifname(interface).map_err(|m| ConfigError(format!("--interface {interface}: {m}")))
}
