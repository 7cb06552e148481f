//! Draws engine progress with indicatif, only when both stdout and stderr are terminals.

use indicatif::{ProgressBar, ProgressStyle};
use rpger_engine::progress::Progress;
use std::io::IsTerminal;
use std::sync::Mutex;

/// A progress bar on stderr, or nothing.
pub struct Bar {
    enabled: bool,
    bar: Mutex<Option<ProgressBar>>,
}

impl Bar {
    /// Enabled only on a terminal and without `--json`.
    pub fn new(json: bool) -> Self {
        Bar { enabled: !json && std::io::stdout().is_terminal() && std::io::stderr().is_terminal(), bar: Mutex::new(None) }
    }
}

impl Progress for Bar {
    fn start(&self, phase: &str, total: Option<u64>) {
        if !self.enabled {
            return;
        }
        let pb = match total {
            Some(t) => ProgressBar::new(t).with_style(
                ProgressStyle::with_template("{msg:8} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            ),
            None => ProgressBar::new_spinner().with_style(
                ProgressStyle::with_template("{msg:8} {spinner} {bytes} {bytes_per_sec}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            ),
        };
        pb.set_message(phase.to_string());
        *self.bar.lock().unwrap_or_else(|e| e.into_inner()) = Some(pb);
    }

    fn advance(&self, bytes: u64) {
        if let Some(pb) = self.bar.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            pb.inc(bytes);
        }
    }

    fn finish(&self) {
        if let Some(pb) = self.bar.lock().unwrap_or_else(|e| e.into_inner()).take() {
            pb.finish_and_clear();
        }
    }
}
