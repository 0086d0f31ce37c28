//! `director import --from keepalived`: keepalived.conf (keepalived 2.2's syntax, includes
//! followed) → the `[director]` document. `syntax` reads the file into items; this module
//! sorts the top level (the LVS part is carried, VRRP, global and static blocks are one
//! warning each), `services` maps each `virtual_server`, `checks` its checkers.

mod checks;
mod services;
mod syntax;

use super::document::{to_toml, Place, Service, Virtual};
use super::{check_interface, Imported};
use crate::config_file::ConfigError;
use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use syntax::{Item, Word};

/// The warnings of one import, in input order.
#[derive(Debug, Default)]
pub(super) struct Warnings(Vec<String>);

impl Warnings {
    pub(super) fn add(&mut self, at: &Place, msg: impl std::fmt::Display) {
        self.0.push(at.warning(msg));
    }

    /// `file:line: KEY ARGS is not carried (why)`.
    pub(super) fn not_carried(&mut self, item: &Item, why: &str) {
        self.add(
            item.at(),
            format_args!("{} is not carried ({why})", item.head()),
        );
    }

    /// `file:line: KEY ARGS of PARENT is not carried (why)`.
    pub(super) fn not_carried_of(&mut self, item: &Item, parent: &Item, why: &str) {
        let head = item.head();
        self.add(
            item.at(),
            format_args!("{head} of {} is not carried ({why})", parent.head()),
        );
    }
}

/// The first argument of an item.
pub(super) fn arg(item: &Item) -> Result<&Word, ConfigError> {
    item.args.first().ok_or_else(|| {
        item.at()
            .err(format_args!("{} needs a value", item.key.text))
    })
}

/// The first argument of an item as a number (`what` says what it counts).
pub(super) fn number<T: std::str::FromStr>(item: &Item, what: &str) -> Result<T, ConfigError> {
    let a = arg(item)?;
    a.text.parse().map_err(|_| {
        a.at.err(format_args!(
            "{} {:?} is not {what} (a whole number in range)",
            item.key.text, a.text
        ))
    })
}

/// Converts keepalived.conf at `path` (and the files it includes) to a `[director]` TOML
/// document for `interface`, validated as `director up` reads it, and the warnings of what
/// it does not carry.
pub fn keepalived_to_toml(path: &Path, interface: &str) -> Result<Imported, ConfigError> {
    check_interface(interface)?;
    let (items, mut read_warnings) = syntax::parse_file(path)?;
    let name = path.display().to_string();
    let mut imported = convert(&name, &items, interface)?;
    read_warnings.append(&mut imported.warnings);
    imported.warnings = read_warnings;
    Ok(imported)
}

/// The same for one text without includes (tests and the generative tests).
#[cfg(test)]
pub(crate) fn keepalived_text_to_toml(
    name: &str,
    text: &str,
    interface: &str,
) -> Result<Imported, ConfigError> {
    check_interface(interface)?;
    convert(name, &syntax::parse_text(name, text)?, interface)
}

fn convert(name: &str, items: &[Item], interface: &str) -> Result<Imported, ConfigError> {
    let mut w = Warnings::default();
    let groups: HashMap<String, &Item> = items
        .iter()
        .filter(|i| i.key.text == "virtual_server_group")
        .filter_map(|i| i.args.first().map(|n| (n.text.clone(), i)))
        .collect();
    let mut services: Vec<Service> = Vec::new();
    let mut vrrp_vips = Vec::new();
    for item in items {
        match item.key.text.as_str() {
            "virtual_server" => services.extend(services::virtual_server(item, &groups, &mut w)?),
            "virtual_server_group" => {
                arg(item)?;
            }
            _ => top_level(item, &mut w, &mut vrrp_vips),
        }
    }
    if services.is_empty() {
        return Err(ConfigError(format!(
            "{name}: no virtual_server to import; rs-agent imports keepalived's LVS part"
        )));
    }
    shared_vips(&services, &vrrp_vips, &mut w);
    let toml = to_toml(
        &format!("keepalived configuration {name}"),
        name,
        interface,
        &services,
    )?;
    Ok(Imported {
        toml,
        warnings: w.0,
    })
}

/// A top-level block that is not LVS: one warning each.
fn top_level(item: &Item, w: &mut Warnings, vrrp_vips: &mut Vec<(IpAddr, Place, String)>) {
    let key = item.key.text.as_str();
    match key {
        "vrrp_instance" | "vrrp_sync_group" | "vrrp_script" => {
            w.add(item.at(), format_args!("{}: VRRP is not carried: rs-agent has no HA mode yet", item.head()));
            if key == "vrrp_instance" {
                vrrp_vips.extend(vrrp_addresses(item));
            }
        }
        "global_defs" if item.block.as_ref().is_some_and(|b| !b.is_empty()) => {
            w.not_carried(item, "rs-agent has no global settings: notification mail, router_id and the like stay keepalived's")
        }
        "global_defs" => {}
        "static_ipaddress" | "static_routes" | "static_rules" => {
            w.not_carried(item, "rs-agent binds only the services' VIPs")
        }
        "SSL" => w.not_carried(item, "rs-agent's https checks present no client certificate and do not verify the server's"),
        _ => w.not_carried(item, "import does not know it"),
    }
}

/// The addresses of a vrrp_instance's `virtual_ipaddress` (and `_excluded`) blocks.
fn vrrp_addresses(item: &Item) -> Vec<(IpAddr, Place, String)> {
    let name = item.head();
    item.block
        .iter()
        .flatten()
        .filter(|i| i.key.text.starts_with("virtual_ipaddress"))
        .flat_map(|i| i.block.iter().flatten())
        .filter_map(|a| {
            let ip = a.key.text.split('/').next()?.parse().ok()?;
            Some((ip, a.at().clone(), name.clone()))
        })
        .collect()
}

/// A service VIP that VRRP also holds: rs-agent binds it itself.
fn shared_vips(services: &[Service], vrrp: &[(IpAddr, Place, String)], w: &mut Warnings) {
    for (ip, at, instance) in vrrp {
        let used = services
            .iter()
            .any(|s| matches!(s.virt, Virtual::Addr { ip: vip, .. } if vip == *ip));
        if used {
            w.add(
                at,
                format_args!(
                    "{ip} in the virtual_ipaddress of {instance} is an imported service's VIP: \
                 rs-agent binds each service's VIP on --interface itself, so keepalived's VRRP \
                 must not hold it too (stop keepalived before `director up`)"
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests;
