//! What a service does when states change: its quorum (the weight of healthy real servers
//! it needs, with hysteresis) and the commands run when it gains or loses it (`quorum_up`,
//! `quorum_down`) or when a real server's verdict flips (`notify_up`, `notify_down`).
//!
//! Owns how these keys fit the service (they need a check; the quorum must be reachable). It
//! must not run anything (`director::run` does) nor judge a server (`health` does).

use super::values::{err, int_in, Loc};
use crate::config_file::director::{RawReal, RawService};
use crate::config_file::{ConfigError, ConfigFile};
use crate::director::model::{HealthCheck, Notify, Probe, Quorum, RealNotify};
use crate::kernel::ipvs::Destination;
use toml::Spanned;

/// The service's quorum, validated against its real servers.
pub(super) fn quorum(
    file: &ConfigFile,
    raw: &RawService,
    check: Option<&HealthCheck>,
    reals: &[Destination],
) -> Result<Quorum, ConfigError> {
    need_check(
        file,
        check,
        raw.quorum.as_ref().map(|v| ("quorum", v.span())),
    )?;
    need_check(
        file,
        check,
        raw.hysteresis.as_ref().map(|v| ("hysteresis", v.span())),
    )?;
    let weight = match &raw.quorum {
        Some(q) => int_in(file, q, 1, u32::MAX.into(), "quorum")? as u32,
        None => 1,
    };
    let hysteresis = match &raw.hysteresis {
        Some(h) => int_in(file, h, 0, u32::MAX.into(), "hysteresis")? as u32,
        None => 0,
    };
    if let Some(h) = raw.hysteresis.as_ref().filter(|_| hysteresis >= weight) {
        return Err(file.err_at(
            h,
            format!(
                "hysteresis {hysteresis} must be less than quorum {weight}, or the service \
                 would never lose its quorum; set quorum = {} or more, or lower hysteresis",
                u64::from(hysteresis) + 1
            ),
        ));
    }
    let quorum = Quorum { weight, hysteresis };
    reachable(file, raw, check, reals, quorum)?;
    Ok(quorum)
}

/// A quorum the configured weights can never reach would keep the sorry server in for good.
/// A `misc_dynamic` check sets weights of its own (up to 253), so it is not held to this.
fn reachable(
    file: &ConfigFile,
    raw: &RawService,
    check: Option<&HealthCheck>,
    reals: &[Destination],
    q: Quorum,
) -> Result<(), ConfigError> {
    let dynamic = check.is_some_and(|c| matches!(c.probe, Probe::Command { dynamic: true, .. }));
    let total: u64 = reals.iter().map(|d| u64::from(d.weight)).sum();
    let need = u64::from(q.weight) + u64::from(q.hysteresis);
    let Some(at) = raw.quorum.as_ref().filter(|_| !dynamic && need > total) else {
        return Ok(());
    };
    Err(file.err_at(
        at,
        format!(
            "quorum {} + hysteresis {} is more than the weights of all real servers ({total}): \
             the service could never come up; make quorum + hysteresis at most {total}",
            q.weight, q.hysteresis
        ),
    ))
}

/// `quorum_up` / `quorum_down` of the service.
pub(super) fn quorum_notify(
    file: &ConfigFile,
    raw: &RawService,
    check: Option<&HealthCheck>,
) -> Result<Notify, ConfigError> {
    let misplaced = raw.notify_up.as_ref().or(raw.notify_down.as_ref());
    if let Some(v) = misplaced {
        return Err(file.err_at(
            v,
            "a service's commands are quorum_up and quorum_down (run when it gains or loses its \
             quorum); notify_up and notify_down belong under [[director.service.real]]",
        ));
    }
    notify(
        file,
        check,
        &raw.quorum_up,
        &raw.quorum_down,
        ("quorum_up", "quorum_down"),
    )
}

/// `notify_up` / `notify_down` of each real server that has any (`reals`: validated, in the
/// order of `raw`).
pub(super) fn real_notify(
    file: &ConfigFile,
    raw: &[RawReal],
    check: Option<&HealthCheck>,
    reals: &[Destination],
) -> Result<Vec<RealNotify>, ConfigError> {
    let mut out = Vec::new();
    for (r, d) in raw.iter().zip(reals) {
        let keys = ("notify_up", "notify_down");
        let notify = notify(file, check, &r.notify_up, &r.notify_down, keys)?;
        if !notify.is_empty() {
            out.push(RealNotify {
                addr: d.addr,
                port: d.port,
                notify,
            });
        }
    }
    Ok(out)
}

fn notify(
    file: &ConfigFile,
    check: Option<&HealthCheck>,
    up: &Option<Spanned<Vec<String>>>,
    down: &Option<Spanned<Vec<String>>>,
    (up_key, down_key): (&str, &str),
) -> Result<Notify, ConfigError> {
    let one = |v: &Option<Spanned<Vec<String>>>, key: &str| {
        v.as_ref()
            .map(|v| {
                need_check(file, check, Some((key, v.span())))?;
                argv(file, v, key)
            })
            .transpose()
    };
    Ok(Notify {
        up: one(up, up_key)?,
        down: one(down, down_key)?,
    })
}

/// A command as an argv array: the program first, never empty.
fn argv(
    file: &ConfigFile,
    v: &Spanned<Vec<String>>,
    key: &str,
) -> Result<Vec<String>, ConfigError> {
    match v.get_ref().first() {
        Some(program) if !program.is_empty() => Ok(v.get_ref().clone()),
        _ => Err(file.err_at(
            v,
            format!(
                "{key} must start with the program, e.g. [\"/usr/local/bin/notify\", \"arg\"] \
                 (run without a shell; for one use [\"/bin/sh\", \"-c\", \"...\"])"
            ),
        )),
    }
}

/// A key that only a check's verdicts act on, in a service without a check.
fn need_check(
    file: &ConfigFile,
    check: Option<&HealthCheck>,
    key: Option<(&str, std::ops::Range<usize>)>,
) -> Result<(), ConfigError> {
    match (check, key) {
        (None, Some((key, span))) => Err(err(
            Loc::Span(file, span),
            format!(
                "{key} acts on the verdicts of health checks and this service has none; add \
                 [director.service.check] or remove it"
            ),
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use crate::config_file::ConfigFile;
    use crate::director::config::{director, DirectorDesired};
    use crate::director::model::{Probe, Quorum};

    fn parse(text: &str) -> Result<DirectorDesired, String> {
        let name = Some(std::path::PathBuf::from("d.toml"));
        let file = ConfigFile::parse(name, text.to_string()).map_err(|e| e.0)?;
        director(&file, &Default::default()).map_err(|e| e.0)
    }

    /// A checked service (lines 3–5, its `extra` from line 6) with two real servers of
    /// weight 2 and 1 (`real`: more keys of the first), and the check's `check` keys.
    fn svc(extra: &str, real: &str, check: &str) -> String {
        format!(
            "[director]\ninterface = \"eth0\"\n[[director.service]]\nvip = \"192.0.2.100\"\n\
             port = 80\n{extra}\n[director.service.check]\ntype = \"tcp\"\n{check}\n\
             [[director.service.real]]\naddress = \"198.51.100.2\"\nweight = 2\n{real}\n\
             [[director.service.real]]\naddress = \"198.51.100.3\"\n"
        )
    }

    #[test]
    fn quorum_alpha_notify_and_misc_dynamic_are_read() {
        let text = svc(
            "quorum = 2\nhysteresis = 1\nquorum_up = [\"/bin/up\"]\nquorum_down = [\"/bin/down\", \"x\"]",
            "notify_down = [\"/bin/n\", \"down\"]",
            "alpha = true",
        );
        let d = parse(&text).expect("valid");
        let s = &d.services[0];
        let q = Quorum {
            weight: 2,
            hysteresis: 1,
        };
        assert_eq!(s.quorum, q);
        assert_eq!(s.quorum_notify.on(true), Some(&["/bin/up".to_string()][..]));
        assert_eq!(s.quorum_notify.on(false).map(<[String]>::len), Some(2));
        let n = s
            .notify_of(s.reals[0].addr, 80)
            .expect("the first has commands");
        assert_eq!(
            (n.up.as_ref(), n.down.as_ref().map(Vec::len)),
            (None, Some(2))
        );
        assert!(s.notify_of(s.reals[1].addr, 80).is_none());
        assert!(s.check.as_ref().is_some_and(|c| c.alpha));
        let d = parse(&svc("", "", "").replace(
            "type = \"tcp\"",
            "type = \"command\"\ncommand = [\"/bin/c\"]\nmisc_dynamic = true",
        ))
        .expect("valid");
        let probe = d.services[0].check.as_ref().map(|c| c.probe.clone());
        assert!(
            matches!(probe, Some(Probe::Command { dynamic: true, .. })),
            "{probe:?}"
        );
        let d = parse(&svc("", "", "")).expect("valid");
        assert_eq!(d.services[0].quorum, Quorum::default());
        assert!(d.services[0].check.as_ref().is_some_and(|c| !c.alpha));
    }

    #[test]
    fn bad_keys_name_position_and_fix() {
        let unchecked =
            "[director]\ninterface = \"eth0\"\n[[director.service]]\nvip = \"192.0.2.100\"\n\
                         port = 80\nquorum = 2\nreals = [\"198.51.100.2\"]\n";
        let real_unchecked = "[director]\ninterface = \"eth0\"\n[[director.service]]\nvip = \"192.0.2.100\"\n\
                              port = 80\n[[director.service.real]]\naddress = \"198.51.100.2\"\nnotify_up = [\"/bin/n\"]\n";
        let cases = [
            (svc("quorum = 0", "", ""), "d.toml:6:10: quorum 0 is out of range; expected 1..="),
            (
                svc("quorum = 2\nhysteresis = 2", "", ""),
                "d.toml:7:14: hysteresis 2 must be less than quorum 2, or the service would never lose its quorum; set quorum = 3 or more",
            ),
            (
                svc("hysteresis = 1", "", ""),
                "d.toml:6:14: hysteresis 1 must be less than quorum 1",
            ),
            (
                svc("quorum = 4", "", ""),
                "d.toml:6:10: quorum 4 + hysteresis 0 is more than the weights of all real servers (3): the service could never come up; make quorum + hysteresis at most 3",
            ),
            (
                svc("quorum_up = []", "", ""),
                "d.toml:6:13: quorum_up must start with the program, e.g. [\"/usr/local/bin/notify\", \"arg\"]",
            ),
            (
                svc("", "notify_down = [\"\"]", ""),
                "d.toml:13:15: notify_down must start with the program",
            ),
            (
                svc("notify_up = [\"/bin/n\"]", "", ""),
                "d.toml:6:13: a service's commands are quorum_up and quorum_down",
            ),
            (
                unchecked.to_string(),
                "d.toml:6:10: quorum acts on the verdicts of health checks and this service has none; add [director.service.check] or remove it",
            ),
            (
                real_unchecked.to_string(),
                "d.toml:8:13: notify_up acts on the verdicts of health checks",
            ),
            (
                svc("", "", "misc_dynamic = true"),
                "d.toml:9:16: misc_dynamic applies only to a command check (its exit code sets the weight), not a tcp check; remove it",
            ),
            (svc("", "", "alpha = 1"), "d.toml:9:9: alpha must be true or false (no quotes), not integer `1`"),
            (svc("", "", "omega = true"), "d.toml:9:1: unknown field `omega`"),
        ];
        for (text, want) in cases {
            let got = parse(&text).expect_err(&text);
            assert!(got.starts_with(want), "got {got}\nwant {want}\n{text}");
        }
    }

    /// A misc_dynamic check sets weights of its own: a quorum above the configured weights
    /// may be reached.
    #[test]
    fn a_dynamic_check_may_need_more_than_the_configured_weights() {
        let text = svc("quorum = 10", "", "").replace(
            "type = \"tcp\"",
            "type = \"command\"\ncommand = [\"/bin/c\"]\nmisc_dynamic = true",
        );
        assert_eq!(parse(&text).map(|d| d.services[0].quorum.weight), Ok(10));
    }
}
