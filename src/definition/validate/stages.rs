//! `[[stage]]` tables: names, parents (explicit or the stage above), cycles among them, and
//! each stage's own keys; stages come out parents first.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

use serde_spanned::Spanned;

use super::{Checker, header_span};
use crate::definition::error::{Problem, suggest};
use crate::definition::raw::RawStage;
use crate::definition::types::{Communicator, CommunicatorKind, Stage, StageName, Step};
use crate::units::MAX_REFRESH;

impl Checker {
    pub(super) fn stages(
        &mut self,
        stages: Option<&Spanned<Vec<Spanned<RawStage>>>>,
        communicator: Option<&Communicator>,
        vars: &BTreeMap<String, String>,
    ) -> Option<Vec<Stage>> {
        let raw_stages = match stages {
            Some(stages) if !stages.get_ref().is_empty() => stages.get_ref(),
            Some(stages) => {
                self.report(Problem::NoStages, stages.span());
                return None;
            }
            None => {
                self.report(Problem::NoStages, 0..0);
                return None;
            }
        };
        let problems_before = self.problems.len();
        let names = self.stage_names(raw_stages);
        let parents = self.stage_parents(raw_stages, &names);
        if self.problems.len() == problems_before {
            self.cycles(raw_stages, &names, &parents);
        }

        let kind = communicator.map(|communicator| communicator.kind);
        let mut built = Vec::new();
        for (index, stage) in raw_stages.iter().enumerate() {
            let parent = parents[index].and_then(|parent| names[parent].clone());
            let checked = self.stage(stage.get_ref(), kind, vars);
            if let (Some(name), Some(body)) = (&names[index], checked) {
                built.push(Stage {
                    name: name.clone(),
                    parent,
                    user_data: body.user_data,
                    refresh: body.refresh,
                    network: body.network,
                    keep_package_caches: body.keep_package_caches,
                    steps: body.steps,
                });
            }
        }
        if self.problems.len() != problems_before || built.len() != raw_stages.len() {
            return None;
        }
        Some(parents_first(built, &parents))
    }

    /// Each stage's name: present, well formed, unique (`None` where it is not).
    fn stage_names(&mut self, raw_stages: &[Spanned<RawStage>]) -> Vec<Option<StageName>> {
        let mut names = Vec::with_capacity(raw_stages.len());
        let mut first_seen: HashMap<&str, Range<usize>> = HashMap::new();
        for stage in raw_stages {
            let Some(name) = &stage.get_ref().name else {
                let span = header_span(self.lines.text(), stage.span());
                self.report(Problem::MissingKey { key: "name".into(), table: "[[stage]]" }, span);
                names.push(None);
                continue;
            };
            let Some(valid) = StageName::new(name.get_ref()) else {
                self.report(Problem::BadStageName { name: name.get_ref().clone() }, name.span());
                names.push(None);
                continue;
            };
            if let Some(first) = first_seen.get(name.get_ref().as_str()) {
                let first_line = self.lines.line_column(first.start).0;
                let problem = Problem::DuplicateStage { name: name.get_ref().clone(), first_line };
                let invalid = self.invalid(problem, name.span()).with_secondary(
                    &self.lines,
                    first.clone(),
                    "first defined here".into(),
                );
                self.problems.push(invalid);
            } else {
                first_seen.insert(name.get_ref(), name.span());
            }
            names.push(Some(valid));
        }
        names
    }

    /// Each stage's parent index: an explicit `parent` must name a stage; the default is the
    /// stage above.
    fn stage_parents(
        &mut self,
        raw_stages: &[Spanned<RawStage>],
        names: &[Option<StageName>],
    ) -> Vec<Option<usize>> {
        let mut index_of: HashMap<&str, usize> = HashMap::new();
        for (index, name) in names.iter().enumerate() {
            if let Some(name) = name {
                index_of.entry(name.as_str()).or_insert(index);
            }
        }
        let mut parents = Vec::with_capacity(raw_stages.len());
        for (index, stage) in raw_stages.iter().enumerate() {
            let Some(parent) = &stage.get_ref().parent else {
                parents.push(index.checked_sub(1));
                continue;
            };
            let found = index_of.get(parent.get_ref().as_str()).copied();
            if found.is_none() {
                let known = names.iter().flatten().map(StageName::as_str);
                let suggestion = suggest(parent.get_ref(), known);
                self.report(
                    Problem::UnknownParent { parent: parent.get_ref().clone(), suggestion },
                    parent.span(),
                );
            }
            parents.push(found);
        }
        parents
    }

    /// Reports each cycle among parents once, at the explicit `parent` that closes it. Each
    /// stage is walked once: linear in the number of stages.
    fn cycles(
        &mut self,
        raw_stages: &[Spanned<RawStage>],
        names: &[Option<StageName>],
        parents: &[Option<usize>],
    ) {
        #[derive(Clone, Copy, PartialEq)]
        enum Seen {
            Not,
            OnWalk(usize),
            Done,
        }
        let mut seen = vec![Seen::Not; raw_stages.len()];
        for start in 0..raw_stages.len() {
            let mut walk = Vec::new();
            let mut current = Some(start);
            while let Some(at) = current {
                match seen[at] {
                    Seen::Done => break,
                    Seen::OnWalk(position) => {
                        self.report_cycle(raw_stages, names, parents, &walk[position..]);
                        break;
                    }
                    Seen::Not => {
                        seen[at] = Seen::OnWalk(walk.len());
                        walk.push(at);
                        current = parents[at];
                    }
                }
            }
            for member in walk {
                seen[member] = Seen::Done;
            }
        }
    }

    fn report_cycle(
        &mut self,
        raw_stages: &[Spanned<RawStage>],
        names: &[Option<StageName>],
        parents: &[Option<usize>],
        cycle: &[usize],
    ) {
        // The member whose explicit parent points at itself or below it closes it.
        let Some(closer) = cycle
            .iter()
            .copied()
            .find(|&member| parents[member].is_some_and(|parent| parent >= member))
            .or_else(|| cycle.first().copied())
        else {
            return;
        };
        let mut order = vec![closer];
        let mut next = parents[closer];
        while let Some(member) = next {
            order.push(member);
            if member == closer {
                break;
            }
            next = parents[member];
        }
        let cycle_names = order
            .iter()
            .map(|&member| names[member].as_ref().map_or_else(String::new, ToString::to_string))
            .collect();
        let span = raw_stages[closer]
            .get_ref()
            .parent
            .as_ref()
            .map_or_else(|| raw_stages[closer].span(), Spanned::span);
        self.report(Problem::ParentCycle { cycle: cycle_names }, span);
    }

    fn stage(
        &mut self,
        stage: &RawStage,
        kind: Option<CommunicatorKind>,
        vars: &BTreeMap<String, String>,
    ) -> Option<StageBody> {
        let before = self.problems.len();
        let user_data = stage.user_data.as_ref().and_then(|text| self.user_data(text, vars));
        let refresh = match &stage.refresh {
            None => None,
            Some(text) => self.duration("refresh", Some(text), Duration::ZERO, MAX_REFRESH),
        };
        let network = stage.network.as_ref().is_none_or(|network| *network.get_ref());
        if let Some(network) = &stage.network
            && !*network.get_ref()
            && kind == Some(CommunicatorKind::Ssh)
        {
            self.report(Problem::NetworkNeedsGuestAgent, network.span());
        }
        let mut steps = Vec::new();
        if let Some(raw_steps) = &stage.steps {
            for step in raw_steps.get_ref() {
                if let Some(step) = self.step(step, kind, vars) {
                    steps.push(step);
                }
            }
        }
        let keep_package_caches = stage.keep_package_caches.unwrap_or(false);
        (self.problems.len() == before).then_some(StageBody {
            user_data,
            refresh,
            network,
            keep_package_caches,
            steps,
        })
    }
}

/// A stage's own keys, checked; its name and parent are checked across stages.
struct StageBody {
    user_data: Option<PathBuf>,
    refresh: Option<Duration>,
    network: bool,
    keep_package_caches: bool,
    steps: Vec<Step>,
}

/// Parents before children; among stages whose order is free, the file's order.
fn parents_first(stages: Vec<Stage>, parents: &[Option<usize>]) -> Vec<Stage> {
    let mut order = Vec::with_capacity(stages.len());
    let mut placed = vec![false; stages.len()];
    let mut in_chain = vec![false; stages.len()];
    for index in 0..stages.len() {
        let mut chain = vec![index];
        in_chain[index] = true;
        let mut current = parents[index];
        while let Some(parent) = current {
            if placed[parent] || in_chain[parent] {
                break;
            }
            in_chain[parent] = true;
            chain.push(parent);
            current = parents[parent];
        }
        for &member in chain.iter().rev() {
            in_chain[member] = false;
            if !placed[member] {
                placed[member] = true;
                order.push(member);
            }
        }
    }
    let mut slots: Vec<Option<Stage>> = stages.into_iter().map(Some).collect();
    order.into_iter().filter_map(|index| slots.get_mut(index).and_then(Option::take)).collect()
}
