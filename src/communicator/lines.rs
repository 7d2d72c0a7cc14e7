//! Splitting a command's output stream into lines, for both communicators.

use crate::events::Stream;

/// Splits a byte stream into lines (lossy UTF-8, `\r\n` and `\n`).
#[derive(Default)]
pub(super) struct Lines {
    partial: Vec<u8>,
}

impl Lines {
    pub(super) fn push(
        &mut self,
        data: &[u8],
        stream: Stream,
        on_output: &mut (dyn FnMut(Stream, &str) + Send),
    ) {
        self.partial.extend_from_slice(data);
        let mut start = 0;
        while let Some(end) = self.partial[start..].iter().position(|&b| b == b'\n') {
            let line = &self.partial[start..start + end];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            on_output(stream, &String::from_utf8_lossy(line));
            start += end + 1;
        }
        self.partial.drain(..start);
    }

    pub(super) fn finish(
        &mut self,
        stream: Stream,
        on_output: &mut (dyn FnMut(Stream, &str) + Send),
    ) {
        if !self.partial.is_empty() {
            let line = String::from_utf8_lossy(&self.partial).into_owned();
            self.partial.clear();
            on_output(stream, &line);
        }
    }
}
