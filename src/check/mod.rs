//! Checks that prove a built image works: what a `[[test]]` asks for (an HTTP answer, a
//! shell command's exit status, an active systemd unit, a listening port), the guest-side
//! shell command that runs each one, the runner, the results and their JUnit XML.
//! Names are unique within a definition: `definition/validate/checks.rs` checks that, once.
//! Owns no guest and no QEMU: the runner is handed something that executes a command in a
//! freshly booted guest ([`GuestExec`]); booting it, and recording results, is the caller's.

mod command;
mod junit;
mod run;

use std::time::Duration;

use serde::Serialize;
use sha2::{Digest, Sha256};

pub use command::guest_command;
pub use junit::junit_xml;
pub use run::{
    CheckRecord, CheckResult, ExecFailure, GuestExec, GuestOutput, Progress, run_check, run_checks,
};

use crate::units::format_duration;

/// How long a check may take unless it says otherwise.
pub const DEFAULT_TIMEOUT: Duration = crate::definition::DEFAULT_CHECK_TIMEOUT;
/// The longest timeout a check may ask for.
pub const MAX_TIMEOUT: Duration = crate::definition::MAX_CHECK_TIMEOUT;

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("a check needs a name")]
    EmptyName,
    #[error("check `{name}`: {problem}")]
    Invalid { name: String, problem: String },
    #[error("check `{name}` could not be run in the guest")]
    Guest {
        name: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("failed to encode the checks")]
    Encode(#[source] serde_json::Error),
    #[error("failed to write the JUnit report")]
    Junit(#[source] std::io::Error),
}

pub use crate::definition::CheckKind;

/// One validated check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    name: String,
    kind: CheckKind,
    #[serde(serialize_with = "serialize_seconds")]
    timeout: Duration,
}

fn serialize_seconds<S: serde::Serializer>(value: &Duration, to: S) -> Result<S::Ok, S::Error> {
    to.serialize_f64(value.as_secs_f64())
}

impl Check {
    /// Validates one check; `timeout` defaults to [`DEFAULT_TIMEOUT`].
    pub fn new(
        name: impl Into<String>,
        kind: CheckKind,
        timeout: Option<Duration>,
    ) -> Result<Check, CheckError> {
        let name = name.into();
        if name.trim().is_empty() {
            return Err(CheckError::EmptyName);
        }
        let invalid = |problem: String| CheckError::Invalid { name: name.clone(), problem };
        if name.chars().any(char::is_control) {
            return Err(invalid("the name contains a control character".to_owned()));
        }
        let timeout = timeout.unwrap_or(DEFAULT_TIMEOUT);
        if timeout < Duration::from_secs(1) || timeout > MAX_TIMEOUT {
            return Err(invalid(format!(
                "timeout {} is out of range: use 1s to {}",
                format_duration(timeout),
                format_duration(MAX_TIMEOUT)
            )));
        }
        validate_kind(&kind).map_err(invalid)?;
        Ok(Check { name, kind, timeout })
    }

    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    #[must_use]
    pub fn kind(&self) -> &CheckKind {
        &self.kind
    }

    #[must_use]
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

fn validate_kind(kind: &CheckKind) -> Result<(), String> {
    kind.problem().map_or(Ok(()), Err)
}

/// The sha256 of a check set (in order): what a layer's record says ran against it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct ChecksDigest(String);

impl ChecksDigest {
    pub fn of(checks: &[Check]) -> Result<ChecksDigest, CheckError> {
        // serde_json keeps struct field order and sorts nothing else here: the encoding of a
        // given set is fixed by the types above, which is all a digest needs.
        let canonical = serde_json::to_vec(checks).map_err(CheckError::Encode)?;
        Ok(ChecksDigest(hex::encode(Sha256::digest(&canonical))))
    }

    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for ChecksDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn http(url: &str) -> CheckKind {
        CheckKind::Http { url: url.to_owned(), status: 200, contains: None }
    }

    #[test]
    fn checks_are_validated() {
        let ok = Check::new("app", http("http://127.0.0.1:8080/health"), None).unwrap();
        assert_eq!(ok.timeout(), DEFAULT_TIMEOUT);
        let bad = |kind, timeout| Check::new("x", kind, timeout).unwrap_err().to_string();
        assert!(bad(http("ftp://host/"), None).contains("not an http"));
        assert!(bad(http("no url"), None).contains("not a URL"));
        let status = CheckKind::Http { url: "http://h/".into(), status: 99, contains: None };
        assert!(bad(status, None).contains("status 99"));
        assert!(bad(CheckKind::Port { port: 0 }, None).contains("port 0"));
        assert!(bad(CheckKind::Service { unit: "a b".into() }, None).contains("systemd unit"));
        assert!(bad(CheckKind::Shell { command: " ".into() }, None).contains("non-empty"));
        let long = Some(Duration::from_secs(7200));
        assert!(bad(CheckKind::Port { port: 22 }, long).contains("out of range"));
        assert!(matches!(
            Check::new(" ", CheckKind::Port { port: 22 }, None),
            Err(CheckError::EmptyName)
        ));
    }

    #[test]
    fn the_digest_follows_the_set() {
        let a = Check::new("a", CheckKind::Port { port: 22 }, None).unwrap();
        let b = Check::new("b", CheckKind::Service { unit: "ssh.service".into() }, None).unwrap();
        let one = ChecksDigest::of(&[a.clone(), b.clone()]).unwrap();
        assert_eq!(one, ChecksDigest::of(&[a.clone(), b.clone()]).unwrap());
        assert_eq!(one.as_str().len(), 64);
        let longer = Check::new("a", CheckKind::Port { port: 22 }, Some(Duration::from_secs(90)));
        assert_ne!(one, ChecksDigest::of(&[longer.unwrap(), b]).unwrap());
    }
}
