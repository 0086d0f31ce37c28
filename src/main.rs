//! Thin entry point: parse the command line, call the library, map errors to exit codes.

use clap::Parser;
use rs_agent::cli::{Cli, Command, DirectorArgs, DirectorCommand, RealServerArgs, RunArgs};
use rs_agent::config_file::ConfigFile;
use rs_agent::director::{self, config::DirectorDesired};
use rs_agent::error::Error;
use rs_agent::real_server::{self, config, drain, model::RealServerDesired};
use std::io::Write;
use std::process::ExitCode;

fn init_logging(verbose: u8) {
    rs_agent::logging::init(match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    });
}

fn real_server_desired(args: &RealServerArgs) -> Result<RealServerDesired, Error> {
    let file = ConfigFile::load(args.config.as_deref())?;
    Ok(config::real_server(&file, &args.flags())?)
}

/// For `status`: settings from flags/config when any are given, else the state file's.
fn optional_desired(args: &RealServerArgs) -> Result<Option<RealServerDesired>, Error> {
    let file = ConfigFile::load(args.config.as_deref())?;
    let has_file = file.raw.real_server.is_some();
    if args.flags().is_empty() && !has_file {
        return Ok(None);
    }
    Ok(Some(config::real_server(&file, &args.flags())?))
}

/// For `run`: the desired state and check interval, re-read on every SIGHUP.
fn run_settings(args: &RunArgs) -> Result<real_server::RunSettings, Error> {
    let file = ConfigFile::load(args.settings.config.as_deref())?;
    let desired = config::real_server(&file, &args.settings.flags())?;
    let flags = config::RunFlags {
        interval: args.interval.as_deref(),
        health_listen: args.health_listen.as_deref(),
        metrics_listen: args.metrics_listen.as_deref(),
    };
    let keys = config::run_keys(&file, flags)?;
    Ok(real_server::RunSettings {
        desired,
        interval: keys.interval,
        health_listen: keys.health_listen,
        metrics_listen: keys.metrics_listen,
    })
}

/// Prints a status report as JSON (when asked) or text; exit 1 when the node is not ok.
/// `status` with nothing to compare: no configuration given and none applied (after `down`).
/// A node rs-agent has nothing on is not wrong, so exit 0 — monitoring that expects a
/// configuration passes it (`--config`), and then a missing one is NOT OK.
fn nothing_configured<W: Write>(
    out: &mut W,
    json: bool,
    side: &str,
    state_dir: &std::path::Path,
) -> Result<ExitCode, Error> {
    let encoded = json.then(|| {
        serde_json::to_string_pretty(&serde_json::json!({ "ok": true, "configured": false }))
    });
    let line = format!(
        "nothing configured: rs-agent has applied no {side} configuration here (state directory \
         {}); pass --config or --vip to check one",
        state_dir.display()
    );
    emit(out, encoded, |o| writeln!(o, "{line}"), true)
}

fn emit<W: Write>(
    out: &mut W,
    json: Option<serde_json::Result<String>>,
    text: impl FnOnce(&mut W) -> std::io::Result<()>,
    ok: bool,
) -> Result<ExitCode, Error> {
    let written = match json {
        Some(encoded) => {
            let encoded = encoded.map_err(|e| Error::Input(format!("encoding JSON: {e}")))?;
            writeln!(out, "{encoded}")
        }
        None => text(out),
    };
    written.map_err(Error::Output)?;
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The outcome of a command that changed the node, once its report is written: a failed
/// write (stdout a closed pipe) must not turn an applied change into exit 2 ("nothing was
/// changed"), so it is said on stderr and the exit status stays that of the change.
fn printed_after_change(written: std::io::Result<()>, changed: bool) -> Result<(), Error> {
    match written {
        Ok(()) => Ok(()),
        Err(e) if changed => {
            let prefix = rs_agent::logging::error_prefix();
            say_error(format_args!(
                "{prefix}rs-agent: writing output: {e}; the change was applied (see `rs-agent status`)"
            ));
            Ok(())
        }
        Err(e) => Err(Error::Output(e)),
    }
}

fn director_desired(args: &DirectorArgs) -> Result<DirectorDesired, Error> {
    let t = std::time::Instant::now();
    let file = ConfigFile::load(args.config.as_deref())?;
    let desired = director::config::director(&file, &args.flags())?;
    // Read by `director run` only, but validated by every command (`director check` first).
    director::config::metrics(&file, None)?;
    rs_agent::timing("read and validate the configuration", t);
    Ok(desired)
}

/// For `director status`: settings from flags or a config file with a [director] table, else
/// the state file's.
fn optional_director(args: &DirectorArgs) -> Result<Option<DirectorDesired>, Error> {
    let file = ConfigFile::load(args.config.as_deref())?;
    if args.is_empty() && file.raw.director.is_none() {
        return Ok(None);
    }
    Ok(Some(director::config::director(&file, &args.flags())?))
}

/// The imported TOML and its warnings; with `--strict`, warnings are a refusal (printed
/// here, nothing on stdout, exit 2).
fn read_import(args: &rs_agent::cli::ImportArgs) -> Result<director::import::Imported, Error> {
    use rs_agent::cli::ImportFrom;
    let imported = match (args.from, &args.file) {
        (ImportFrom::Ipvsadm, file) => {
            let read = match file {
                Some(path) => {
                    std::fs::read_to_string(path).map_err(|e| (path.display().to_string(), e))
                }
                None => {
                    std::io::read_to_string(std::io::stdin()).map_err(|e| ("stdin".to_string(), e))
                }
            };
            let input = read.map_err(|(name, e)| Error::Input(format!("reading {name}: {e}")))?;
            director::import::Imported {
                toml: director::import::ipvsadm_save_to_toml(&input, &args.interface)?,
                warnings: Vec::new(),
            }
        }
        (ImportFrom::Keepalived, Some(path)) => {
            director::import::keepalived_to_toml(path, &args.interface)?
        }
        (ImportFrom::Ldirectord, Some(path)) => {
            director::import::ldirectord_to_toml(path, &args.interface)?
        }
        (from, None) => {
            let from = format!("{from:?}").to_lowercase();
            return Err(Error::Input(format!(
                "--from {from} needs FILE (its own path: includes and names are read relative to it)"
            )));
        }
    };
    for w in &imported.warnings {
        say_error(format_args!("warning: {w}"));
    }
    if args.strict && !imported.warnings.is_empty() {
        return Err(Error::Input(format!(
            "--strict: {} warning(s) above, so no configuration was written; carry those \
             settings by hand or leave --strict off",
            imported.warnings.len()
        )));
    }
    Ok(imported)
}

async fn run_director(
    cli_state: &std::path::Path,
    command: DirectorCommand,
) -> Result<ExitCode, Error> {
    let mut out = std::io::stdout().lock();
    match command {
        DirectorCommand::Up(args) => {
            let desired = director_desired(&args.settings)?;
            let options = director::UpOptions {
                dry_run: args.dry_run,
                adopt: args.adopt,
                skip_unowned: false,
                defer_announce: false,
            };
            let report = director::up(&desired, cli_state, options).await?;
            printed_after_change(report.print(&mut out), report.changed())?;
        }
        DirectorCommand::Run(args) => {
            let file = ConfigFile::load(args.settings.config.as_deref())?;
            let options = director::run::RunOptions {
                reconcile_interval: std::time::Duration::from_secs(args.reconcile_interval.max(1)),
                max_in_flight: args.max_in_flight,
                adopt: args.adopt,
                metrics: director::config::metrics(&file, args.metrics_listen.as_deref())?,
            };
            let load = || director_desired(&args.settings);
            let (shutdown, reloads) = rs_agent::daemon::signals::install()?;
            director::run::run(load, cli_state, options, shutdown, reloads).await?;
        }
        DirectorCommand::Down(args) => {
            let report = director::down(cli_state, args.dry_run).await?;
            printed_after_change(report.print(&mut out), report.changed())?;
        }
        DirectorCommand::Status(args) => {
            let desired = optional_director(&args.settings)?;
            let Some(report) = director::status::status(desired.as_ref(), cli_state).await? else {
                return nothing_configured(&mut out, args.json, "director", cli_state);
            };
            let json = args.json.then(|| serde_json::to_string_pretty(&report));
            return emit(&mut out, json, |o| report.print(o), report.ok);
        }
        DirectorCommand::Check(args) => {
            let desired = director_desired(&args.settings)?;
            let checked = match args.offline {
                true => {
                    "configuration valid (offline: permissions, interface and IPVS not checked)"
                }
                false => {
                    director::check(&desired).await?;
                    "configuration valid and preflight passed"
                }
            };
            let reals: usize = desired.services.iter().map(|s| s.reals.len()).sum();
            writeln!(
                out,
                "ok: {checked}: {} service(s), {reals} real server(s)",
                desired.services.len()
            )
            .map_err(Error::Output)?;
        }
        DirectorCommand::Import(args) => {
            // Converted and validated whole before a byte is printed: a refused import
            // leaves nothing behind a `> director.toml`.
            let imported = read_import(&args)?;
            write!(out, "{}", imported.toml).map_err(Error::Output)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn run(cli: Cli) -> Result<ExitCode, Error> {
    let mut out = std::io::stdout().lock();
    match cli.command {
        Command::Director(command) => return run_director(&cli.state_dir, command).await,
        Command::Drain | Command::Undrain => {
            let drain = matches!(cli.command, Command::Drain);
            let changed = drain::set_drained(&cli.state_dir, drain).map_err(|e| {
                Error::Input(format!("drain flag in {}: {e}", cli.state_dir.display()))
            })?;
            let server = match rs_agent::state_dir::holder(
                &cli.state_dir,
                rs_agent::state_dir::REAL_SERVER_RUN,
            ) {
                Ok(Some((pid, listen))) => drain::Server::Agent { pid, listen },
                _ => drain::Server::NoAgent,
            };
            let line = drain::describe(drain, changed, &server);
            printed_after_change(writeln!(out, "{line}"), changed)?;
        }
        Command::Up(args) => {
            let desired = real_server_desired(&args.settings)?;
            let report = real_server::up(&desired, &cli.state_dir, args.dry_run).await?;
            printed_after_change(report.print(&mut out), report.changed())?;
        }
        Command::Run(args) => {
            let (shutdown, reloads) = rs_agent::daemon::signals::install()?;
            real_server::run(|| run_settings(&args), &cli.state_dir, shutdown, reloads).await?;
        }
        Command::Down(args) => {
            let report = real_server::down(&cli.state_dir, args.dry_run).await?;
            printed_after_change(report.print(&mut out), report.changed())?;
        }
        Command::Status(args) => {
            let desired = optional_desired(&args.settings)?;
            let Some(report) = real_server::status(desired.as_ref(), &cli.state_dir).await? else {
                return nothing_configured(&mut out, args.json, "real server", &cli.state_dir);
            };
            let json = args.json.then(|| serde_json::to_string_pretty(&report));
            return emit(&mut out, json, |o| report.print(o), report.ok);
        }
        Command::Check(args) => {
            let desired = real_server_desired(&args)?;
            let plan = real_server::check(&desired, &cli.state_dir).await?;
            for w in &plan.warnings {
                writeln!(out, "warning: {w}").map_err(Error::Output)?;
            }
            writeln!(
                out,
                "ok: configuration valid and preflight passed; `up` would make {} change(s)",
                plan.changes.len()
            )
            .map_err(Error::Output)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// One line on stderr; a broken stderr is ignored (`eprintln!` would panic, exit 101).
fn say_error(line: std::fmt::Arguments) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// The command line, or the exit for a bad one: help and version print as clap prints them
/// (exit 0); a usage error is one line naming what is wrong and where help is, exit 2 (clap's
/// own is five to seven lines: the error, a tip, the usage, a pointer to --help).
fn parse_cli() -> Result<Cli, ExitCode> {
    use clap::error::ErrorKind;
    let e = match Cli::try_parse() {
        Ok(cli) => return Ok(cli),
        Err(e) => e,
    };
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        let _ = e.print();
        return Err(ExitCode::from(e.exit_code().clamp(0, 255) as u8));
    }
    let rendered = e.render().to_string();
    let mut lines = rendered.lines().map(str::trim).filter(|l| !l.is_empty());
    let what = lines.next().unwrap_or("bad command line");
    let what = what.strip_prefix("error: ").unwrap_or(what);
    let tip = lines
        .find_map(|l| l.strip_prefix("tip: "))
        .map(|t| format!(" ({t})"));
    let prefix = rs_agent::logging::error_prefix();
    say_error(format_args!(
        "{prefix}rs-agent: {what}{}; see `{} --help`",
        tip.unwrap_or_default(),
        command_path()
    ));
    Err(ExitCode::from(2))
}

/// `rs-agent director up` for `rs-agent -v --state-dir /x director up --bogus`: the
/// subcommands clap matched, parsing again with errors ignored.
fn command_path() -> String {
    use clap::CommandFactory;
    let matches = Cli::command().ignore_errors(true).get_matches();
    let mut path = vec!["rs-agent".to_string()];
    let mut at = &matches;
    while let Some((name, sub)) = at.subcommand() {
        path.push(name.to_string());
        at = sub;
    }
    path.join(" ")
}

fn main() -> ExitCode {
    let cli = match parse_cli() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    // A daemon's repairs are its output: `run` and `director run` log at info by default.
    let daemon = u8::from(matches!(
        cli.command,
        Command::Run(_) | Command::Director(DirectorCommand::Run(_))
    ));
    init_logging(cli.verbose.max(daemon));
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let prefix = rs_agent::logging::error_prefix();
            say_error(format_args!(
                "{prefix}rs-agent: cannot start the async runtime: {e}"
            ));
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            let prefix = rs_agent::logging::error_prefix();
            say_error(format_args!("{prefix}rs-agent: {e}"));
            ExitCode::from(e.exit_code() as u8)
        }
    }
}
