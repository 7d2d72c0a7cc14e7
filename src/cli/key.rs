//! `strata key generate PATH [--algorithm A]`: a signing key pair for the shared cache.

use super::{Error, GlobalArgs, KeyCommand};

pub fn run(command: &KeyCommand, global: &GlobalArgs) -> Result<(), Error> {
    match command {
        KeyCommand::Generate { path, algorithm } => {
            let generated = crate::trust::generate(path, *algorithm)?;
            let lines = format!(
                "wrote the private key {} (mode 0600: keep it secret, e.g. as a CI secret file) \
                 and the public key {} ({}, id {}): runners pass `--trust {}`",
                generated.private.display(),
                generated.public.display(),
                generated.algorithm,
                generated.key_id,
                generated.public.display()
            );
            let json = serde_json::json!({ "key_generated": generated });
            crate::report::outcome(global.log_format, global.quiet, &lines, &json);
            Ok(())
        }
    }
}
