//! `strata sbom DEF [--stage NAME] [--format F] [-o FILE]`: a built stage's SBOM from its
//! layer's record; `strata sbom --package NAME DEF...`: which built stages hold a package.
//! Parses, calls the engine, and hands the result to `report/` or writes the file.

use std::path::PathBuf;

use super::{Error, GlobalArgs, SbomArgs};
use crate::layer::LayerStore;
use crate::sbom::StageState;

pub fn run(args: &SbomArgs, global: &GlobalArgs) -> Result<(), Error> {
    let layers = LayerStore::new(global.open_store()?);
    if let Some(name) = &args.package {
        return find(name, &args.definitions, &layers, global);
    }
    let [path] = args.definitions.as_slice() else {
        return Err(Error::Usage(
            "an SBOM is of one definition: give one DEF (or --package NAME to search many)".into(),
        ));
    };
    let definition = crate::definition::load(path)?;
    let (contents, bytes) =
        crate::sbom::sbom(&definition, path, &layers, args.stage.as_deref(), args.format)?;
    match &args.output {
        Some(file) => {
            crate::store::write_atomic(file, &bytes).map_err(|error| {
                Error::Runtime(format!(
                    "failed to write {}: {error}; check that its folder exists and is writable",
                    file.display()
                ))
            })?;
            let line = format!(
                "{}: {} packages of {} stage {} ({})",
                file.display(),
                contents.packages.len(),
                contents.image,
                contents.stage,
                args.format.name()
            );
            let json = serde_json::json!({
                "sbom": file, "format": args.format.name(), "image": contents.image,
                "stage": contents.stage, "layer": contents.layer_key, "packages": contents.packages.len(),
            });
            crate::report::outcome(global.log_format, global.quiet, &line, &json);
        }
        None => crate::report::document(&bytes),
    }
    Ok(())
}

fn find(
    name: &str,
    paths: &[PathBuf],
    layers: &LayerStore,
    global: &GlobalArgs,
) -> Result<(), Error> {
    let mut definitions = Vec::new();
    for path in paths {
        definitions.push((path.clone(), crate::definition::load(path)?));
    }
    let holdings = crate::sbom::find_package(&definitions, layers, name)?;
    let mut rows =
        vec![["definition", "stage", "layer", "package", "version", "arch"].map(String::from)];
    let mut objects = Vec::new();
    for holding in &holdings {
        let definition = holding.definition.display().to_string();
        let (layer, package, version, arch, state) = match &holding.state {
            StageState::Holds { layer_key, package } => (
                Some(layer_key.as_str()),
                package.name.clone(),
                package.version.clone(),
                package.arch.clone(),
                "holds",
            ),
            StageState::Lacks { layer_key } => {
                (Some(layer_key.as_str()), String::new(), "-".into(), String::new(), "lacks")
            }
            StageState::NotBuilt => {
                (None, String::new(), "not built".into(), String::new(), "not_built")
            }
        };
        rows.push([
            definition.clone(),
            holding.stage.clone(),
            layer.map_or("-".to_owned(), |key| key.get(..12).unwrap_or(key).to_owned()),
            package.clone(),
            version.clone(),
            arch.clone(),
        ]);
        let mut object = serde_json::json!({
            "definition": definition, "image": holding.image, "stage": holding.stage, "state": state,
            "layer": layer,
        });
        if state == "holds" {
            object["package"] =
                serde_json::json!({ "name": package, "version": version, "arch": arch });
        }
        objects.push(object);
    }
    crate::report::findings(global.log_format, &rows, &objects);
    Ok(())
}
