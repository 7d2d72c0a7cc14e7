//! Which built stages of many definitions hold a package, and at which version: the question a
//! re-bake starts from ("which of our images still carry the vulnerable openssl?"). A package
//! matches by its own name or by its source package's (`openssl` finds `libssl3`).

use std::path::PathBuf;

use super::SbomError;
use crate::definition::ImageDefinition;
use crate::drift::Package;
use crate::layer::{LayerStore, PlanOptions, Status};

/// What one stage says about the package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StageState {
    /// Built, and holding this package (one row per matching package).
    Holds { layer_key: String, package: Package },
    /// Built, without it.
    Lacks { layer_key: String },
    /// No layer for the stage's current inputs in the store: unknown.
    NotBuilt,
}

/// One stage of one definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holding {
    /// The definition's path as given.
    pub definition: PathBuf,
    pub image: String,
    pub stage: String,
    pub state: StageState,
}

/// Every stage of every definition, in order: the packages named `name` (or built from the
/// source package `name`) it holds, or that it lacks them, or that it is not built.
pub fn find_package(
    definitions: &[(PathBuf, ImageDefinition)],
    layers: &LayerStore,
    name: &str,
) -> Result<Vec<Holding>, SbomError> {
    let mut out = Vec::new();
    for (path, definition) in definitions {
        let plan = crate::layer::plan_from_store(definition, layers, &PlanOptions::default())
            .map_err(SbomError::Plan)?;
        let holding = |stage: &str, state| Holding {
            definition: path.clone(),
            image: definition.name.clone(),
            stage: stage.to_owned(),
            state,
        };
        let Some(plan) = plan else {
            out.extend(
                definition
                    .stages
                    .iter()
                    .map(|stage| holding(stage.name.as_str(), StageState::NotBuilt)),
            );
            continue;
        };
        for planned in &plan.stages {
            let stage = planned.stage.name.as_str();
            let Status::Cached(layer) = &planned.status else {
                out.push(holding(stage, StageState::NotBuilt));
                continue;
            };
            let layer_key = layer.metadata.key.clone();
            let found: Vec<&Package> =
                layer.metadata.packages.iter().filter(|package| matches(package, name)).collect();
            if found.is_empty() {
                out.push(holding(stage, StageState::Lacks { layer_key: layer_key.clone() }));
            }
            for package in found {
                let state =
                    StageState::Holds { layer_key: layer_key.clone(), package: package.clone() };
                out.push(holding(stage, state));
            }
        }
    }
    Ok(out)
}

fn matches(package: &Package, name: &str) -> bool {
    package.name == name || package.source.as_ref().is_some_and(|source| source.name == name)
}
