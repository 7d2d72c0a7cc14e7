//! Checking servers against a layer's inventory: one host (connect, collect, compare), many
//! at once with bounded concurrency, and the summary a cron job acts on.

use std::time::Instant;

use futures_util::StreamExt;

use super::connection::{Connection, Login};
use super::{FleetError, HostSpec};
use crate::drift::{Compare, Finding, IgnoreRules, Inventory, Roots};

/// How many servers are checked at once.
pub const CONCURRENCY: usize = 8;

/// What servers are compared with: a layer's inventory, and the definition's `[drift]`.
#[derive(Debug, Clone, Copy)]
pub struct Baseline<'a> {
    pub inventory: &'a Inventory,
    pub roots: &'a Roots,
    pub ignore: &'a IgnoreRules,
}

/// How one server's check ended.
#[derive(Debug)]
pub enum HostOutcome {
    Clean,
    Drifted(Vec<Finding>),
    /// Could not be checked (unreachable, key refused, collection failed…).
    Failed(FleetError),
}

#[derive(Debug)]
pub struct HostReport {
    pub host: HostSpec,
    pub outcome: HostOutcome,
    pub seconds: f64,
}

/// Connects to `host`, collects its inventory as root with drift's one command and compares it
/// with `baseline` (one finding when it is plainly another system).
pub async fn check_host(host: &HostSpec, login: &Login, baseline: Baseline<'_>) -> HostOutcome {
    match collect_and_compare(host, login, baseline).await {
        Ok(findings) if findings.is_empty() => HostOutcome::Clean,
        Ok(findings) => HostOutcome::Drifted(findings),
        Err(error) => HostOutcome::Failed(error),
    }
}

async fn collect_and_compare(
    host: &HostSpec,
    login: &Login,
    baseline: Baseline<'_>,
) -> Result<Vec<Finding>, FleetError> {
    let connection = Connection::open(host, login).await?;
    let script = crate::drift::collect_script(baseline.roots, baseline.ignore);
    let output = connection.run_as_root(&script).await;
    connection.close().await;
    let inventory = crate::drift::parse_inventory(&output?, baseline.roots)
        .map_err(|source| FleetError::Unreadable { host: host.to_string(), source })?;
    let how = Compare { ignore: baseline.ignore, detect_different_system: true };
    Ok(crate::drift::compare(baseline.inventory, &inventory, &how))
}

/// Checks every host, [`CONCURRENCY`] at a time; `on_done` hears about each as it ends.
/// Returns the reports in the order of `hosts`.
pub async fn check_fleet(
    hosts: &[HostSpec],
    login: &Login,
    baseline: Baseline<'_>,
    on_done: &(dyn Fn(&HostReport) + Sync),
) -> Vec<HostReport> {
    let checks = hosts.iter().enumerate().map(|(index, host)| async move {
        let started = Instant::now();
        let outcome = check_host(host, login, baseline).await;
        let report =
            HostReport { host: host.clone(), outcome, seconds: started.elapsed().as_secs_f64() };
        on_done(&report);
        (index, report)
    });
    let mut reports: Vec<(usize, HostReport)> =
        futures_util::stream::iter(checks).buffer_unordered(CONCURRENCY).collect().await;
    reports.sort_by_key(|(index, _)| *index);
    reports.into_iter().map(|(_, report)| report).collect()
}

/// How many servers were clean, drifted, or could not be checked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    pub clean: usize,
    pub drifted: usize,
    pub failed: usize,
}

/// What the whole run says, most serious first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Some server could not be checked: the run is incomplete, whatever the others showed
    /// (a cron job must not take it as all clear, nor as only drift).
    Incomplete,
    /// Every server was checked and some drifted.
    Drift,
    /// Every server was checked and none drifted.
    Clean,
}

impl Summary {
    #[must_use]
    pub fn of(reports: &[HostReport]) -> Summary {
        let mut summary = Summary::default();
        for report in reports {
            match report.outcome {
                HostOutcome::Clean => summary.clean += 1,
                HostOutcome::Drifted(_) => summary.drifted += 1,
                HostOutcome::Failed(_) => summary.failed += 1,
            }
        }
        summary
    }

    #[must_use]
    pub fn verdict(&self) -> Verdict {
        if self.failed > 0 {
            Verdict::Incomplete
        } else if self.drifted > 0 {
            Verdict::Drift
        } else {
            Verdict::Clean
        }
    }

    #[must_use]
    pub fn hosts(&self) -> usize {
        self.clean + self.drifted + self.failed
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} host(s): {} clean, {} drifted, {} could not be checked",
            self.hosts(),
            self.clean,
            self.drifted,
            self.failed
        )
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn report(outcome: HostOutcome) -> HostReport {
        HostReport { host: HostSpec::parse("web1").unwrap(), outcome, seconds: 0.1 }
    }

    fn drifted() -> HostOutcome {
        let finding =
            Finding::FileAdded { path: "/etc/x".into(), file_type: crate::drift::FileType::File };
        HostOutcome::Drifted(vec![finding])
    }

    fn failed() -> HostOutcome {
        HostOutcome::Failed(FleetError::ConnectTimeout {
            host: "web2".into(),
            waited: std::time::Duration::from_secs(10),
        })
    }

    #[test]
    fn the_verdict_puts_an_incomplete_check_before_drift_before_clean() {
        let summary = Summary::of(&[report(HostOutcome::Clean), report(HostOutcome::Clean)]);
        assert_eq!((summary.clean, summary.verdict()), (2, Verdict::Clean));
        let summary = Summary::of(&[report(HostOutcome::Clean), report(drifted())]);
        assert_eq!(summary.verdict(), Verdict::Drift);
        let summary =
            Summary::of(&[report(drifted()), report(failed()), report(HostOutcome::Clean)]);
        assert_eq!(summary, Summary { clean: 1, drifted: 1, failed: 1 });
        assert_eq!(summary.verdict(), Verdict::Incomplete);
        assert_eq!(summary.to_string(), "3 host(s): 1 clean, 1 drifted, 1 could not be checked");
    }

    #[tokio::test]
    async fn a_fleet_keeps_its_order_and_reports_each_host() {
        // Nothing listens on port 1 of 127.0.0.1: refused at once.
        let hosts: Vec<HostSpec> =
            (0..10).map(|i| HostSpec::parse(&format!("user{i}@127.0.0.1:1")).unwrap()).collect();
        let login = Login {
            local_user: "nobody".into(),
            identity: None,
            known_hosts: Vec::new(),
            ssh_dir: None,
        };
        let inventory = Inventory::default();
        let (roots, ignore) = (Roots::default(), IgnoreRules::new::<&str>(&[]).unwrap());
        let baseline = Baseline { inventory: &inventory, roots: &roots, ignore: &ignore };
        let seen = std::sync::Mutex::new(0);
        let reports = check_fleet(&hosts, &login, baseline, &|_| *seen.lock().unwrap() += 1).await;
        assert_eq!(*seen.lock().unwrap(), 10);
        let users: Vec<_> = reports.iter().map(|r| r.host.user.clone().unwrap()).collect();
        assert_eq!(users, (0..10).map(|i| format!("user{i}")).collect::<Vec<_>>());
        for report in &reports {
            let HostOutcome::Failed(error) = &report.outcome else { panic!("{report:?}") };
            assert!(error.to_string().contains("unreachable"), "{error}");
        }
        assert_eq!(Summary::of(&reports).verdict(), Verdict::Incomplete);
    }
}
