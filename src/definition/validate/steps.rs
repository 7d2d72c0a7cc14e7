//! A stage's steps: exactly one action each, the files they name, env names and templates,
//! timeouts.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_spanned::Spanned;

use super::{Checker, DEFAULT_STEP_TIMEOUT};
use crate::definition::error::Problem;
use crate::definition::raw::{RawStep, Text};
use crate::definition::types::{CommunicatorKind, Step, StepAction};
use crate::units::MAX_TIMEOUT;

impl Checker {
    pub(super) fn step(
        &mut self,
        spanned: &Spanned<RawStep>,
        communicator: Option<CommunicatorKind>,
        vars: &BTreeMap<String, String>,
    ) -> Option<Step> {
        let step = spanned.get_ref();
        let before = self.problems.len();
        let mut actions: Vec<&'static str> = Vec::new();
        for (name, present) in [
            ("run", step.run.is_some()),
            ("shell", step.shell.is_some()),
            ("upload", step.upload.is_some()),
            ("reboot", step.reboot.is_some()),
            ("ansible", step.ansible.is_some()),
        ] {
            if present {
                actions.push(name);
            }
        }
        match actions.as_slice() {
            [] => {
                self.report(Problem::StepWithoutAction, spanned.span());
                return None;
            }
            [_] => {}
            _ => {
                self.report(Problem::StepWithManyActions { actions }, spanned.span());
                return None;
            }
        }
        if let (Some(to), Some(action)) = (&step.to, actions.first())
            && *action != "upload"
        {
            self.report(Problem::ToWithoutUpload { action }, to.span());
        }
        if step.ansible.is_none() {
            let extra_vars = step.extra_vars.as_ref().map(|vars| ("extra_vars", vars.span()));
            let tags = step.tags.as_ref().map(|tags| ("tags", tags.span()));
            for (key, span) in [extra_vars, tags].into_iter().flatten() {
                self.report(Problem::AnsibleKeyWithoutAnsible { key }, span);
            }
        }
        let action = if let Some(script) = &step.run {
            self.existing_file("run", "script", script).map(|script| StepAction::Run { script })
        } else if let Some(command) = &step.shell {
            if command.get_ref().trim().is_empty() {
                self.report(Problem::EmptyValue { key: "shell" }, command.span());
                None
            } else {
                Some(StepAction::Shell { command: command.get_ref().clone() })
            }
        } else if let Some(from) = &step.upload {
            self.upload(spanned, from)
        } else if let Some(reboot) = &step.reboot {
            if *reboot.get_ref() {
                Some(StepAction::Reboot)
            } else {
                self.report(Problem::RebootFalse, reboot.span());
                None
            }
        } else if let Some(playbook) = &step.ansible {
            self.ansible(step, playbook, communicator)
        } else {
            None
        };
        let mut env = BTreeMap::new();
        for (name, value) in &step.env {
            if !is_env_name(name.get_ref()) {
                self.report(Problem::BadEnvName { name: name.get_ref().clone() }, name.span());
                continue;
            }
            let what = format!("env value `{}`", name.get_ref());
            if self.template(&what, value.get_ref(), value.span(), vars, None) {
                env.insert(name.get_ref().clone(), value.get_ref().clone());
            }
        }
        let timeout =
            self.duration("timeout", step.timeout.as_ref(), DEFAULT_STEP_TIMEOUT, MAX_TIMEOUT);
        if self.problems.len() != before {
            return None;
        }
        Some(Step { action: action?, env, timeout: timeout? })
    }

    pub(super) fn upload(&mut self, spanned: &Spanned<RawStep>, from: &Text) -> Option<StepAction> {
        let step = spanned.get_ref();
        let to = match &step.to {
            None => {
                self.report(Problem::UploadWithoutTo, spanned.span());
                None
            }
            Some(to) if !to.get_ref().starts_with('/') => {
                self.report(Problem::RelativeTo { to: to.get_ref().clone() }, to.span());
                None
            }
            Some(to) => Some(to.get_ref().clone()),
        };
        if from.get_ref().trim().is_empty() {
            self.report(Problem::EmptyValue { key: "upload" }, from.span());
            return None;
        }
        let path = self.resolve(from.get_ref());
        if std::fs::symlink_metadata(&path).is_err() {
            self.report(Problem::MissingFile { what: "upload source", path }, from.span());
            return None;
        }
        Some(StepAction::Upload { from: path, to: to? })
    }

    /// `{ ansible = "PATH/site.yml", extra_vars = { … }, tags = [...] }`: the playbook must
    /// exist, and the build must talk SSH (ansible-playbook logs in over it).
    fn ansible(
        &mut self,
        step: &RawStep,
        playbook: &Text,
        communicator: Option<CommunicatorKind>,
    ) -> Option<StepAction> {
        if communicator == Some(CommunicatorKind::GuestAgent) {
            self.report(Problem::AnsibleNeedsSsh, playbook.span());
        }
        let path = self.existing_file("ansible", "playbook", playbook);
        let mut extra_vars = BTreeMap::new();
        if let Some(vars) = &step.extra_vars {
            for (name, value) in vars.get_ref() {
                match serde_json::to_value(value) {
                    Ok(json) => {
                        extra_vars.insert(name.clone(), json);
                    }
                    Err(error) => self.report(
                        Problem::WrongType { message: format!("extra_vars.{name}: {error}") },
                        vars.span(),
                    ),
                }
            }
        }
        let mut tags = Vec::new();
        for tag in step.tags.as_ref().map(Spanned::get_ref).into_iter().flatten() {
            if tag.get_ref().trim().is_empty() || tag.get_ref().contains(',') {
                self.report(Problem::BadTag { tag: tag.get_ref().clone() }, tag.span());
            } else {
                tags.push(tag.get_ref().clone());
            }
        }
        if communicator == Some(CommunicatorKind::GuestAgent) {
            return None;
        }
        Some(StepAction::Ansible { playbook: path?, extra_vars, tags })
    }

    /// A local file a step or stage names: resolved, and it must exist (and be a file).
    pub(super) fn existing_file(
        &mut self,
        key: &'static str,
        what: &'static str,
        text: &Text,
    ) -> Option<PathBuf> {
        if text.get_ref().trim().is_empty() {
            self.report(Problem::EmptyValue { key }, text.span());
            return None;
        }
        let path = self.resolve(text.get_ref());
        match std::fs::metadata(&path) {
            Err(_) => {
                self.report(Problem::MissingFile { what, path }, text.span());
                None
            }
            Ok(metadata) if !metadata.is_file() => {
                self.report(Problem::NotAFile { what, path }, text.span());
                None
            }
            Ok(_) => Some(path),
        }
    }
}

fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    pub(super) fn env_names() {
        assert!(is_env_name("APP_PORT"));
        assert!(is_env_name("_x1"));
        assert!(!is_env_name("1X"));
        assert!(!is_env_name("A-B"));
        assert!(!is_env_name(""));
    }
}
