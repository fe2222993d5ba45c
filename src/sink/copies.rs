//! `-destWriteFiles N`: the Go daemon's debug copies of the marshalled
//! output. The first N envelopes taken for delivery are also written, each
//! to a file of its own in `-capturePath`, exactly as the destination
//! receives them (`xtcp2-<pid>-envelope<i>.<marshal>`), so a user can look
//! at what a consumer gets without a consumer.
//!
//! Unlike the Go daemon (10 by default, into the working directory on
//! every start), ours writes none unless asked. The files are created new
//! (an existing file, or a symlink planted in a shared directory, is never
//! followed or overwritten) and readable by the owner only, like
//! `-writeFiles`' captures: records name the host's connections.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use crate::batch::Envelope;

/// Where and how many copies to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvelopeCopiesConfig {
    pub dir: PathBuf,
    pub count: u64,
}

/// Writes the copies; counts down to zero and then does nothing.
#[derive(Debug)]
pub struct EnvelopeCopies {
    dir: PathBuf,
    extension: &'static str,
    left: u64,
    written: u64,
}

impl EnvelopeCopies {
    /// `extension` names the format (the `-marshal` name).
    pub fn new(config: &EnvelopeCopiesConfig, extension: &'static str) -> EnvelopeCopies {
        EnvelopeCopies {
            dir: config.dir.clone(),
            extension,
            left: config.count,
            written: 0,
        }
    }

    /// Copies one envelope taken for delivery (not again when it is
    /// retried). A copy that cannot be written stops the copies, with one
    /// error line: they are a debugging aid and must not hold up delivery.
    pub fn save(&mut self, envelope: &Envelope) {
        if self.left == 0 {
            return;
        }
        let path = self.dir.join(format!(
            "xtcp2-{}-envelope{}.{}",
            std::process::id(),
            self.written,
            self.extension
        ));
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)
            .and_then(|mut file| file.write_all(envelope.payload()));
        match written {
            Ok(()) => {
                self.written += 1;
                self.left -= 1;
                if self.left == 0 {
                    tracing::info!(
                        copies = self.written,
                        dir = %self.dir.display(),
                        "-destWriteFiles: all envelope copies written"
                    );
                }
            }
            Err(error) => {
                tracing::error!(
                    path = %path.display(),
                    %error,
                    written = self.written,
                    "-destWriteFiles: cannot write an envelope copy; no more copies"
                );
                self.left = 0;
            }
        }
    }
}
