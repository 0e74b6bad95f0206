//! The effect, done once per idempotency key.
//!
//! Levensloop delivers a task *at least* once: after a crash, a lost answer or an expired
//! lease it sends the same step again (a new attempt, the same `idempotency_key`). The handler
//! makes the effect happen once by remembering the keys it has done and answering a repeat
//! with `complete` without doing it again.
//!
//! Here the effect ("close the library account") is a line appended to a JSON-lines file,
//! and that file is also the durable record of the keys done, so a restarted worker (or
//! another worker on the same host) does not repeat an effect. In a real integration, record
//! the key in the same transaction as the effect, e.g. a unique column in the library's
//! database.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::{Mutex, MutexGuard, PoisonError};

use anyhow::Context;
use tracing::{info, warn};

/// What is done once: the step's effect, or its undoing (a compensation has the same
/// idempotency key as the step it undoes, so the flag is part of the key).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    pub idempotency_key: String,
    pub compensation: bool,
}

/// The keys done, and the file that records them.
#[derive(Debug)]
pub struct Effects {
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    done: HashSet<Key>,
    log: Option<Log>,
}

/// The JSON-lines file, read up to `read` bytes.
#[derive(Debug)]
struct Log {
    file: File,
    read: u64,
    /// Whether what was read ends a line (a worker killed mid-write may leave half a line).
    at_line_start: bool,
}

/// The fields of an effect line that make its key; the others are for people reading it.
#[derive(serde::Deserialize)]
struct LoggedKey {
    idempotency_key: String,
    #[serde(default)]
    compensation: bool,
}

impl Effects {
    /// Opens (or creates) the effects file and reads back the keys it records.
    pub fn open(path: Option<&Path>) -> anyhow::Result<Self> {
        let mut done = HashSet::new();
        let log = match path {
            None => {
                info!("no --effects file: effects are remembered in memory only");
                None
            }
            Some(path) => {
                let file = OpenOptions::new()
                    .read(true)
                    .append(true)
                    .create(true)
                    .open(path)
                    .with_context(|| format!("opening the effects file {}", path.display()))?;
                let mut log = Log {
                    file,
                    read: 0,
                    at_line_start: true,
                };
                log.catch_up(&mut done)
                    .with_context(|| format!("reading the effects file {}", path.display()))?;
                info!(path = %path.display(), keys = done.len(), "effects file read");
                Some(log)
            }
        };
        Ok(Self {
            inner: Mutex::new(Inner { done, log }),
        })
    }

    /// Whether the effect for `key` was done already (by this worker or, as far as the file
    /// has been read, by another).
    pub fn is_done(&self, key: &Key) -> bool {
        self.lock().done.contains(key)
    }

    /// Does the effect for `key` unless it was done already: appends `effect` as one line.
    /// Returns whether it did it now.
    ///
    /// The check and the append happen under one lock (and, for the file, under an
    /// exclusive file lock), so two deliveries of the same key cannot both do it.
    pub fn record(&self, key: &Key, effect: &serde_json::Value) -> io::Result<bool> {
        let mut inner = self.lock();
        let Inner { done, log } = &mut *inner;
        if done.contains(key) {
            return Ok(false);
        }
        if let Some(log) = log {
            // Blocking I/O on the runtime, briefly: one short line, under a lock held for
            // microseconds. A real integration would call its library system here.
            log.file.lock()?;
            let appended = log.append_unless_done(key, effect, done);
            let unlocked = log.file.unlock();
            let appended = appended?;
            unlocked?;
            if !appended {
                return Ok(false);
            }
        }
        done.insert(key.clone());
        Ok(true)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic elsewhere while holding the lock leaves the set intact: keep using it.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Log {
    fn append_unless_done(
        &mut self,
        key: &Key,
        effect: &serde_json::Value,
        done: &mut HashSet<Key>,
    ) -> io::Result<bool> {
        // Another worker may have appended since we last read: check its lines too.
        self.catch_up(done)?;
        if done.contains(key) {
            return Ok(false);
        }
        let mut line = if self.at_line_start {
            Vec::new()
        } else {
            b"\n".to_vec()
        };
        serde_json::to_writer(&mut line, effect)?;
        line.push(b'\n');
        // One write of the whole line, then flush: it is on disk (in the OS) before we answer.
        self.file.write_all(&line)?;
        self.file.flush()?;
        self.read += line.len() as u64;
        self.at_line_start = true;
        Ok(true)
    }

    /// Reads the lines appended since the last read and adds their keys to `done`.
    fn catch_up(&mut self, done: &mut HashSet<Key>) -> io::Result<()> {
        self.file.seek(SeekFrom::Start(self.read))?;
        let mut bytes = Vec::new();
        self.file.read_to_end(&mut bytes)?;
        for line in bytes.split(|&b| b == b'\n') {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match serde_json::from_slice::<LoggedKey>(line) {
                Ok(logged) => {
                    done.insert(Key {
                        idempotency_key: logged.idempotency_key,
                        compensation: logged.compensation,
                    });
                }
                Err(error) => warn!(%error, "skipping an unreadable line in the effects file"),
            }
        }
        self.read += bytes.len() as u64;
        if let Some(&last) = bytes.last() {
            self.at_line_start = last == b'\n';
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: &str, compensation: bool) -> Key {
        Key {
            idempotency_key: k.to_owned(),
            compensation,
        }
    }

    #[test]
    fn an_effect_happens_once_per_key_across_restarts() -> anyhow::Result<()> {
        let path =
            std::env::temp_dir().join(format!("library-effects-{}.jsonl", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let line = |k: &str, c: bool| serde_json::json!({"idempotency_key": k, "compensation": c});

        let effects = Effects::open(Some(&path))?;
        assert!(effects.record(&key("saga/a", false), &line("saga/a", false))?);
        assert!(!effects.record(&key("saga/a", false), &line("saga/a", false))?);
        // The undoing is a different effect with the same key.
        assert!(effects.record(&key("saga/a", true), &line("saga/a", true))?);

        // A second worker on the same file (or a restart) sees both.
        let again = Effects::open(Some(&path))?;
        assert!(again.is_done(&key("saga/a", false)));
        assert!(again.is_done(&key("saga/a", true)));
        // One worker's append is seen by the other before it appends.
        assert!(again.record(&key("saga/b", false), &line("saga/b", false))?);
        assert!(!effects.record(&key("saga/b", false), &line("saga/b", false))?);

        assert_eq!(std::fs::read_to_string(&path)?.lines().count(), 3);
        std::fs::remove_file(&path)?;
        Ok(())
    }
}
