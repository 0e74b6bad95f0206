//! Follows a server's log output so the harness can wait for events ("Server is ready")
//! instead of sleeping.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Default)]
struct Lines {
    lines: Vec<String>,
    closed: bool,
}

/// The lines a process has written so far, shared between the reader thread and waiters.
#[derive(Debug, Clone, Default)]
pub(crate) struct LogWatch {
    inner: Arc<(Mutex<Lines>, Condvar)>,
}

/// What [`LogWatch::wait_for`] saw.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Seen {
    Found,
    Closed,
    TimedOut,
}

impl LogWatch {
    /// Copies `source` line by line into `log_file` on a thread of its own, recording each line.
    /// Marks the watch closed when the process's output ends (it exited or was killed).
    pub(crate) fn follow(
        &self,
        source: impl Read + Send + 'static,
        log_file: &Path,
    ) -> std::io::Result<()> {
        let mut file = File::options().create(true).append(true).open(log_file)?;
        let inner = Arc::clone(&self.inner);
        std::thread::spawn(move || {
            for line in BufReader::new(source).lines() {
                let Ok(line) = line else { break };
                // The log file is for people debugging a failed test; losing a line is harmless.
                // One write per line: stdout and stderr are appended by two threads, and a
                // line written in pieces (`writeln!`) can be cut by the other's.
                let _ = file.write_all(format!("{line}\n").as_bytes());
                let (lock, cvar) = &*inner;
                if let Ok(mut lines) = lock.lock() {
                    lines.lines.push(line);
                }
                cvar.notify_all();
            }
            let (lock, cvar) = &*inner;
            if let Ok(mut lines) = lock.lock() {
                lines.closed = true;
            }
            cvar.notify_all();
        });
        Ok(())
    }

    /// A fresh watch for a restarted process.
    pub(crate) fn reset(&mut self) {
        *self = Self::default();
    }

    /// Waits until a line containing `needle` has been written, the output has ended, or the
    /// timeout has passed.
    pub(crate) fn wait_for(&self, needle: &str, timeout: Duration) -> Seen {
        let deadline = Instant::now() + timeout;
        let (lock, cvar) = &*self.inner;
        let Ok(mut lines) = lock.lock() else {
            return Seen::Closed;
        };
        loop {
            if lines.lines.iter().any(|l| l.contains(needle)) {
                return Seen::Found;
            }
            if lines.closed {
                return Seen::Closed;
            }
            let now = Instant::now();
            if now >= deadline {
                return Seen::TimedOut;
            }
            lines = match cvar.wait_timeout(lines, deadline - now) {
                Ok((guard, _)) => guard,
                Err(_) => return Seen::Closed,
            };
        }
    }
}
