//! Warm starts, the build's policy for them: when a stage resumes a saved guest instead of
//! booting (the restore point of the layer below, or for a first stage the source's saved
//! first boot), when the running guest is saved for the next build, and the
//! `--max-restore-size` cap. A failure here costs only a warm start, so it is a warning with
//! its cause, never an error.
//! The other homes of warm starts, each for one thing: `stage/restore.rs` saves and resumes a
//! guest (and checks its fingerprint before QEMU starts); `layer/` keeps them on disk
//! (`restore_points.rs`: layers' restore points, first boots and the cap) and defines their
//! identity (`layer::boot_key`, `layer::machine_shape`).

use std::path::Path;

use super::{BuildContext, Builder, InFlight};
use crate::events::Event;
use crate::layer::LayerKey;

/// `--max-restore-size`: removes the oldest restore points until the rest fit, each with an
/// event. Runs after a restore point is installed (and as a build starts, for a cap lowered
/// since). A failure costs only disk, so it is a warning.
pub(super) fn cap_restore_points(context: &BuildContext<'_>) {
    let Some(max) = context.options.max_restore_size else { return };
    match context.layers.cap_restore_points(max) {
        Ok(removed) => {
            for point in removed {
                context.events.emit(Event::RestorePointRemoved {
                    stage: point.stage,
                    key: point.key.to_string(),
                    bytes: point.bytes,
                    max_bytes: max.bytes(),
                });
            }
        }
        Err(error) => context.events.warn(format!(
            "failed to remove restore points beyond --max-restore-size {max}: {}",
            crate::events::error_chain(&error)
        )),
    }
}

impl Builder<'_, '_> {
    /// Resumes the saved guest `flight` can start from, when there is one that fits: the
    /// restore point of the layer below, or for a first stage the source's saved first boot.
    /// Says in one line why not when there is one that does not.
    pub(super) async fn resume(
        &self,
        flight: &InFlight<'_>,
        job: &crate::stage::StageJob<'_>,
    ) -> Option<crate::stage::Session> {
        if self.context.options.no_warm {
            return None;
        }
        let layers = self.context.layers;
        let (lock_key, restore, what) = match &flight.planned.parent {
            Some(parent) => (parent.clone(), layers.restore_point(parent)?, "the layer below"),
            None => {
                let key = self.boot_key(flight)?;
                let restore = layers.source_restore_point(&key)?;
                (key, restore, "the source's first boot")
            }
        };
        let stage = &flight.planned.stage.name;
        // Held while QEMU loads it: a build saving a new one waits, rather than swap it away.
        let waiting = {
            let (layers, key) = (layers.clone(), lock_key.clone());
            crate::store::wait_for_lock(move || layers.lock_restore_point_shared(&key))
        };
        let _reading = match waiting.await {
            Ok(lock) => lock,
            Err(error) => {
                self.context.events.warn(format!(
                    "stage `{stage}`: not resuming the restore point of {what} ({}); booting instead",
                    crate::events::error_chain(&error)
                ));
                return None;
            }
        };
        match crate::stage::Session::resume(job, &restore).await {
            Ok(session) => Some(session),
            Err(why) => {
                self.context.events.warn(format!(
                    "stage `{stage}`: not resuming the restore point of {what} ({why}); booting instead"
                ));
                let _ = std::fs::remove_file(&job.disk);
                None
            }
        }
    }

    /// The key of the source's saved first boot that a first stage `flight` could resume.
    fn boot_key(&self, flight: &InFlight<'_>) -> Option<LayerKey> {
        crate::layer::first_boot_key(self.context.definition, &flight.planned.stage, self.source)
    }

    /// Saves the guest just booted for the first stage `first`, before its first step, as the
    /// source's first boot, so that a later build of a first stage on this source (this one
    /// changed, or another definition's) resumes it instead of booting. A failure costs only
    /// that warm start, so it is a warning.
    pub(super) async fn save_first_boot(
        &self,
        session: &crate::stage::Session,
        first: &InFlight<'_>,
    ) {
        if self.context.options.no_warm {
            return;
        }
        let Some(key) = self.boot_key(first) else { return };
        let Ok(job) = self.job(first) else { return };
        let layers = self.context.layers;
        // Named after the first stage's key, whose lock this build holds: stale-tmp cleaning
        // leaves it be.
        let temp = layers.store().tmp_dir().join(format!("{}.first-boot", first.planned.key));
        let record = crate::layer::BootRecord {
            source: crate::layer::source_file_name(self.source),
            image: self.context.definition.name.clone(),
            stage: first.planned.stage.name.to_string(),
        };
        let saved = session.save_restore_point(&job, &temp).await;
        let result = match saved {
            Ok(meta) => layers
                .install_source_restore_point(&key, &temp, &record)
                .map(|_| meta)
                .map_err(|error| crate::events::error_chain(&error)),
            Err(error) => Err(crate::events::error_chain(&error)),
        };
        self.saved(first, result, &temp, true);
    }

    /// Saves the running guest as the restore point of the layer `below` (just committed), so
    /// that the next build of the stage above can resume it. A failure costs only the warm
    /// start, so it is a warning.
    pub(super) async fn save_restore_point(
        &self,
        session: &crate::stage::Session,
        next: &InFlight<'_>,
        below: &LayerKey,
    ) {
        if self.context.options.no_warm {
            return;
        }
        let Ok(job) = self.job(next) else { return };
        let layers = self.context.layers;
        // Named after the next key, whose lock this build holds: stale-tmp cleaning leaves it be.
        let temp = layers.store().tmp_dir().join(format!("{}.restore", next.planned.key));
        let saved = session.save_restore_point(&job, &temp).await;
        let result = match saved {
            Ok(meta) => layers
                .install_restore_point(below, &temp)
                .map(|_| meta)
                .map_err(|error| crate::events::error_chain(&error)),
            Err(error) => Err(crate::events::error_chain(&error)),
        };
        self.saved(next, result, &temp, false);
    }

    /// Reports a save of a restore point for `flight`: the event and the cap, or a warning and
    /// the half-saved folder removed.
    fn saved(
        &self,
        flight: &InFlight<'_>,
        result: Result<crate::stage::RestoreMeta, String>,
        temp: &Path,
        first_boot: bool,
    ) {
        match result {
            Ok(meta) => {
                self.context.events.emit(Event::RestoreSaved {
                    stage: flight.planned.stage.name.to_string(),
                    bytes: meta.state_bytes,
                    seconds: meta.save_seconds,
                    first_boot,
                });
                cap_restore_points(self.context);
            }
            Err(error) => {
                let _ = std::fs::remove_dir_all(temp);
                self.context.events.warn(format!("failed to save a restore point: {error}"));
            }
        }
    }
}
