//! `strata export DEF [--stage NAME] [--format F] [--target T] [-o DIR] [--force]`: flattens a
//! built stage into standalone images and platform files. Must not build anything.

use super::Error;
use super::{ExportArgs, GlobalArgs};
use crate::export::{ExportOptions, Selection};
use crate::layer::LayerStore;

pub async fn run(args: &ExportArgs, global: &GlobalArgs) -> Result<(), Error> {
    let definition = crate::definition::load(&args.definition)?;
    let store = global.open_store()?;
    let layers = LayerStore::new(store.clone());
    let selection =
        Selection { stage: args.stage.clone(), format: args.format, target: args.target };
    // gc takes this lock exclusively: it never removes the layers an export reads.
    let gc_guard = super::lock_gc_shared(&store).await?;
    let plan = crate::export::resolve(&definition, &args.definition, &layers, &selection)?;
    // The provenance is signed with --sign-key (STRATA_SIGN_KEY) when one is given.
    let signer = match &global.sign_key {
        Some(path) => Some(std::sync::Arc::new(crate::trust::SigningKey::load(path)?)
            as std::sync::Arc<dyn crate::sbom::dsse::Signer>),
        None => None,
    };
    let options = ExportOptions { output_dir: args.output.clone(), force: args.force, signer };
    let events = global.events();
    let outcome =
        super::interruptible(async { Ok(crate::export::export(&plan, &options, &events).await?) })
            .await?;
    drop(gc_guard);
    let dir = args.output.display();
    let mut lines = vec![format!("manifest: {}", outcome.manifest_path.display())];
    for target in &outcome.manifest.targets {
        match target.target.as_str() {
            "openstack" => lines.push(format!(
                "openstack: upload with the command in {dir}/{} (run it in {dir})",
                target.path
            )),
            "proxmox" => lines.push(format!(
                "proxmox: copy {dir}/{} and {dir}/{} (with its .sha256) to a node and run `sh {} VMID STORAGE`",
                target.path, target.image, target.path
            )),
            _ => {}
        }
    }
    crate::report::note(global.log_format, global.quiet, &lines.join("\n"));
    Ok(())
}
