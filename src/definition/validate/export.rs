//! `[export]`: formats, compression and targets, in the words clap's `ValueEnum` gives the
//! definition's enums (the command line takes the same).

use super::Checker;
use crate::definition::raw::RawExport;
use crate::definition::types::{Compression, Export, ExportFormat, ExportTarget};

impl Checker {
    pub(super) fn export(&mut self, export: Option<&RawExport>) -> Option<Export> {
        let Some(export) = export else {
            return Some(Export {
                formats: vec![ExportFormat::Qcow2],
                compression: Compression::Zstd,
                targets: vec![ExportTarget::Generic],
            });
        };
        let formats =
            self.choices("formats", "export format", export.formats.as_ref(), ExportFormat::Qcow2);
        let compression =
            self.choice("compression", export.compression.as_ref(), Compression::Zstd);
        let targets = self.choices(
            "targets",
            "export target",
            export.targets.as_ref(),
            ExportTarget::Generic,
        );
        Some(Export { formats: formats?, compression: compression?, targets: targets? })
    }
}
