//! `file:PATH`: append to a file, created `0640` (records name hosts,
//! addresses and ports: readable by the owner's group, e.g. a log shipper,
//! not by every local user), reopened after SIGHUP so logrotate can move it
//! away.
//!
//! The daemon runs as root, so the path is opened as an attacker would
//! wish it were not: never through a symlink (`O_NOFOLLOW`, so a link
//! planted at the path cannot redirect root's writes, dangling or not),
//! never anything but a regular file (a FIFO would hang the open, a device
//! would be written to; `/dev/null` alone is allowed, for dry runs), and never in a directory another user can write
//! to unless it is sticky and ours (where another user could swap the file
//! between two opens). Each refusal says why.
//!
//! The reopen happens at the next send after the signal: the rotated file
//! keeps every whole envelope written before it, the new file starts with
//! the next one. A csv/tsv header is written whenever the file is empty at
//! (re)open, so appending to an existing file never puts a second header in
//! its middle.

use std::path::PathBuf;
use std::sync::Arc;

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;

use tokio::runtime::{Handle, RuntimeFlavor};

use super::{DestinationKind, Sent, SinkError, Transport};
use crate::batch::Envelope;
use crate::format::StreamFormat;

/// Mode of a file xtcp2 creates: owner read/write, group read.
pub(crate) const FILE_MODE: u32 = 0o640;

/// The `file:PATH` destination.
pub struct File;

impl DestinationKind for File {
    const SCHEMES: &'static [&'static str] = &["file"];
    const TAKES_ADDRESS: bool = true;
    const FORM: &'static str = "file:PATH";
    const SUMMARY: &'static str =
        "appended to PATH (created 0640, never through a symlink); the csv header when the file is empty at (re)open; SIGHUP reopens";
    type Address = PathBuf;
    type Sink = FileSink;

    fn parse(_scheme: &str, rest: &str) -> Result<PathBuf, String> {
        non_empty_path(rest, "file:/var/log/xtcp2.jsonl")
    }

    async fn open(path: &PathBuf, format: &StreamFormat) -> Result<FileSink, SinkError> {
        FileSink::open(path.clone(), format.header_shared()).await
    }
}

/// Refuses what root must not open for writing: anything but a regular
/// file at the path, or a directory another user can write to (unless it
/// is sticky and ours, as `/tmp` is root's).
fn check_safe_to_open(path: &std::path::Path) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => {
            return Err("the path is a symbolic link; xtcp2 never writes through one (O_NOFOLLOW)".into());
        }
        Ok(meta) if !meta.is_file() && !is_null_device(&meta) => {
            return Err("the path exists and is not a regular file".into())
        }
        _ => {}
    }
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => std::path::Path::new("."),
    };
    let dir = std::fs::metadata(parent).map_err(|e| format!("its directory {}: {e}", parent.display()))?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    let others_can_write = dir.uid() != euid || dir.mode() & 0o022 != 0;
    let sticky_and_ours = dir.mode() & 0o1000 != 0 && dir.uid() == euid;
    if others_can_write && !sticky_and_ours {
        return Err(format!(
            "its directory {} (owner uid {}, mode {:o}) is writable by another user, who could replace the file; \
             use a directory only the daemon's user can write to",
            parent.display(),
            dir.uid(),
            dir.mode() & 0o7777
        ));
    }
    Ok(())
}

/// The null device (character device 1:3, `/dev/null` on Linux): writes go
/// nowhere, so `file:/dev/null` is a safe dry run.
fn is_null_device(meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    meta.file_type().is_char_device() && libc::major(meta.rdev()) == 1 && libc::minor(meta.rdev()) == 3
}

/// A path after `scheme:`, which must not be empty.
pub(crate) fn non_empty_path(rest: &str, example: &str) -> Result<PathBuf, String> {
    if rest.is_empty() {
        Err(format!("needs a path, e.g. {example}"))
    } else {
        Ok(PathBuf::from(rest))
    }
}

pub struct FileSink {
    path: PathBuf,
    file: Option<std::fs::File>,
    header: Arc<[u8]>,
    /// The file had no bytes when opened: write the header first.
    needs_header: bool,
}

impl FileSink {
    /// Opens (creating) the file now, so a bad path fails at start.
    pub async fn open(path: PathBuf, header: Arc<[u8]>) -> Result<FileSink, SinkError> {
        let mut sink = FileSink {
            path,
            file: None,
            header,
            needs_header: false,
        };
        let dest = format!("file:{}", sink.path.display());
        sink.reopen(&dest).await?;
        Ok(sink)
    }

    async fn reopen(&mut self, dest: &str) -> Result<(), SinkError> {
        let io = |source| SinkError::Io {
            dest: dest.to_string(),
            source,
        };
        self.file = None;
        let path = self.path.clone();
        check_safe_to_open(&path).map_err(|reason| SinkError::UnsafePath {
            dest: dest.to_string(),
            reason,
        })?;
        let (file, len) = blocking(move || {
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .mode(FILE_MODE)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&path)?;
            let meta = file.metadata()?;
            if !meta.is_file() && !is_null_device(&meta) {
                return Err(std::io::Error::other("not a regular file"));
            }
            Ok((file, meta.len()))
        })
        .map_err(|source| match source.raw_os_error() {
            Some(libc::ELOOP) => SinkError::UnsafePath {
                dest: dest.to_string(),
                reason: "the path is a symbolic link; xtcp2 never writes through one (O_NOFOLLOW)".into(),
            },
            _ => io(source),
        })?;
        self.needs_header = len == 0 && !self.header.is_empty();
        self.file = Some(file);
        Ok(())
    }

    async fn write(&mut self, envelope: &Envelope, dest: &str) -> Result<(), SinkError> {
        if self.file.is_none() {
            self.reopen(dest).await?;
        }
        let io = |source| SinkError::Io {
            dest: dest.to_string(),
            source,
        };
        let file = self.file.as_mut().ok_or_else(|| SinkError::Io {
            dest: dest.to_string(),
            source: std::io::Error::new(std::io::ErrorKind::NotConnected, "file not open"),
        })?;
        let header: &[u8] = if self.needs_header { &self.header } else { &[] };
        blocking(|| {
            file.write_all(header)?;
            file.write_all(envelope.payload())
        })
        .map_err(io)?;
        self.needs_header = false;
        Ok(())
    }
}

impl Transport for FileSink {
    async fn send(&mut self, envelope: &Envelope, dest: &str) -> Result<Sent, SinkError> {
        self.write(envelope, dest).await.map(|()| Sent::default())
    }

    /// Drops the handle after a failure; the next send reopens the path.
    fn reset(&mut self) {
        self.file = None;
    }

    /// SIGHUP (logrotate moved the file): the next send opens the path anew.
    fn reopen(&mut self) {
        if self.file.take().is_some() {
            tracing::info!(path = %self.path.display(), "SIGHUP: reopening the destination file at its next write");
        }
    }
}

/// Runs blocking file I/O in place. The envelope is written straight from
/// its buffer: tokio::fs would first copy every envelope into a buffer of
/// its own for a blocking-pool thread (9 % of a jsonl one-shot's samples).
/// On the daemon's multi-threaded runtime the worker hands its other tasks
/// to another worker while it writes; on a current-thread runtime (tests)
/// the write simply runs.
fn blocking<T>(f: impl FnOnce() -> std::io::Result<T>) -> std::io::Result<T> {
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}
