//! `strata drift DEF (--host H | --hosts FILE) [--stage S] [--identity FILE] [--known-hosts
//! FILE]`: live servers against the layer they were built from. The layer must be in the store
//! (its record is the baseline); `fleet` does the SSH and the comparison.
//!
//! Exit: 0 all clean; 3 drift on some server, all checked; 1 some server could not be checked
//! (incomplete beats drift: a cron job must not read a partial check as a verdict).

use std::path::PathBuf;

use super::{DriftArgs, Error, GlobalArgs};
use crate::drift::Finding;
use crate::events::Event;
use crate::fleet::{Baseline, HostOutcome, HostReport, HostSpec, Login, Summary, Verdict};
use crate::layer::LayerStore;

pub async fn run(args: &DriftArgs, global: &GlobalArgs) -> Result<(), Error> {
    let hosts = hosts_of(args)?;
    let definition = crate::definition::load(&args.definition)?;
    let layers = LayerStore::new(global.open_store()?);
    let baseline = crate::layer::diff::side_of_stage(
        &definition,
        &layers,
        args.stage.as_deref(),
        &args.definition,
    )?;
    if baseline.inventory.packages.is_empty() && baseline.inventory.files.is_empty() {
        return Err(Error::Runtime(format!(
            "the layer of stage `{}` records no packages or files (an older strata built it): \
             rebuild it with `strata build {} --rebuild {0}`",
            baseline.label,
            args.definition.display()
        )));
    }
    let login = login_of(args, &hosts)?;
    let events = global.events();
    let single = args.host.is_some();
    let on_done = |report: &HostReport| {
        // One server's failure is the command's error, shown once, below.
        if !(single && matches!(report.outcome, HostOutcome::Failed(_))) {
            events.emit(checked_event(report));
        }
    };
    let compare_with = Baseline {
        inventory: &baseline.inventory,
        roots: &definition.drift.roots,
        ignore: &definition.drift.ignore,
    };
    let mut reports = crate::fleet::check_fleet(&hosts, &login, compare_with, &on_done).await;
    let mut rows = vec![["host", "change", "what"].map(String::from)];
    let mut objects = Vec::new();
    for report in &reports {
        if let HostOutcome::Drifted(findings) = &report.outcome {
            for finding in findings {
                let host = report.host.to_string();
                rows.push(row(&host, finding));
                objects.push(object(&host, &baseline.label, finding));
            }
        }
    }
    crate::report::findings(global.log_format, &rows, &objects);
    let summary = Summary::of(&reports);
    if single {
        if let Some(HostReport { outcome: HostOutcome::Failed(error), .. }) = reports.pop() {
            return Err(error.into());
        }
    } else {
        events.emit(Event::DriftFinished {
            hosts: summary.hosts(),
            clean: summary.clean,
            drifted: summary.drifted,
            failed: summary.failed,
        });
    }
    match summary.verdict() {
        Verdict::Clean => Ok(()),
        Verdict::Drift => Err(Error::DriftFound(summary.to_string())),
        Verdict::Incomplete => {
            let failed: Vec<String> = reports
                .iter()
                .filter(|report| matches!(report.outcome, HostOutcome::Failed(_)))
                .map(|report| report.host.to_string())
                .collect();
            Err(Error::Runtime(format!(
                "{} of {} hosts could not be checked: {} (why is above)",
                failed.len(),
                summary.hosts(),
                failed.join(", ")
            )))
        }
    }
}

/// `--host`, or the hosts of `--hosts FILE`. Invalid: exit 2.
fn hosts_of(args: &DriftArgs) -> Result<Vec<HostSpec>, Error> {
    match (&args.host, &args.hosts) {
        (Some(host), _) => HostSpec::parse(host).map(|host| vec![host]).map_err(|why| {
            Error::Usage(format!("--host {host}: {why} (write [USER@]HOST[:PORT])"))
        }),
        (None, Some(file)) => Ok(crate::fleet::read_hosts_file(file)?),
        (None, None) => Err(Error::Usage("give --host [USER@]HOST[:PORT] or --hosts FILE".into())),
    }
}

/// Who logs in and with what, as `ssh` would choose.
fn login_of(args: &DriftArgs, hosts: &[HostSpec]) -> Result<Login, Error> {
    let home = std::env::var_os("HOME").filter(|home| !home.is_empty()).map(PathBuf::from);
    let ssh_dir = home.map(|home| home.join(".ssh"));
    let known_hosts = match (&args.known_hosts, &ssh_dir) {
        (Some(file), _) => vec![file.clone()],
        (None, Some(dir)) => {
            vec![dir.join("known_hosts"), PathBuf::from("/etc/ssh/ssh_known_hosts")]
        }
        (None, None) => vec![PathBuf::from("/etc/ssh/ssh_known_hosts")],
    };
    if let Some(identity) = &args.identity
        && !identity.is_file()
    {
        return Err(Error::Usage(format!("--identity {}: no such file", identity.display())));
    }
    // Needed only for a host that names no user.
    let local_user =
        if hosts.iter().all(|host| host.user.is_some()) { String::new() } else { local_user()? };
    Ok(Login { local_user, identity: args.identity.clone(), known_hosts, ssh_dir })
}

/// The local user, as `ssh` logs in by default: `$USER`, else `$LOGNAME` (cron sets both).
fn local_user() -> Result<String, Error> {
    ["USER", "LOGNAME"]
        .iter()
        .find_map(|name| std::env::var(name).ok().filter(|user| !user.is_empty()))
        .ok_or_else(|| {
            Error::Usage(
                "neither USER nor LOGNAME names the local user: write the user to log in as, \
                 USER@HOST"
                    .into(),
            )
        })
}

fn checked_event(report: &HostReport) -> Event {
    let (outcome, findings, error) = match &report.outcome {
        HostOutcome::Clean => ("clean", 0, None),
        HostOutcome::Drifted(findings) => ("drifted", findings.len(), None),
        HostOutcome::Failed(error) => ("failed", 0, Some(crate::report::error_chain(error))),
    };
    Event::DriftChecked {
        host: report.host.to_string(),
        outcome: outcome.to_owned(),
        findings,
        seconds: report.seconds,
        error,
    }
}

fn row(host: &str, finding: &Finding) -> [String; 3] {
    let [change, what] = super::diff::change_and_what(finding);
    [host.to_owned(), change, what]
}

/// One finding as one JSON object: its host and the layer (stage) it was compared with.
fn object(host: &str, stage: &str, finding: &Finding) -> serde_json::Value {
    let fields = [("event", "drift_finding"), ("host", host), ("stage", stage)];
    super::diff::finding_object(finding, &fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_finding_becomes_a_row_and_an_object_naming_its_host() {
        let finding = Finding::FileRemoved {
            path: "/etc/app.conf".into(),
            file_type: crate::drift::FileType::File,
        };
        let row = row("admin@web1:2222", &finding);
        assert_eq!(row, ["admin@web1:2222", "file removed", "/etc/app.conf"].map(String::from));
        let object = object("web1", "final", &finding);
        assert_eq!(object["event"], "drift_finding");
        assert_eq!(object["kind"], "file_removed");
        assert_eq!(object["host"], "web1");
        assert_eq!(object["stage"], "final");
    }
}
