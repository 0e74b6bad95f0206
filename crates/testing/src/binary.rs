//! Finding the `nats-server` binary and checking its version.

use crate::HarnessError;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The oldest server the project accepts: 2.12 brought the fixes to replicated optimistic
/// concurrency that the store relies on, and `sync_interval` is needed by the strict profile.
pub const MIN_VERSION: ServerVersion = ServerVersion {
    major: 2,
    minor: 12,
    patch: 0,
};

/// A `major.minor.patch` server version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ServerVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl ServerVersion {
    /// Parses the output of `nats-server --version`, e.g. `nats-server: v2.12.8`.
    pub fn parse(output: &str) -> Option<Self> {
        let token = output
            .split_whitespace()
            .find(|t| t.starts_with('v') && t[1..].starts_with(|c: char| c.is_ascii_digit()))?;
        let mut parts = token[1..].split(['.', '-', '+']);
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        let patch = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        Some(Self {
            major,
            minor,
            patch,
        })
    }
}

impl fmt::Display for ServerVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// A `nats-server` binary whose version has been checked.
#[derive(Debug, Clone)]
pub struct NatsBinary {
    pub path: PathBuf,
    pub version: ServerVersion,
}

impl NatsBinary {
    /// Checks that the binary at `path` runs and is at least [`MIN_VERSION`].
    pub fn check(path: &Path) -> Result<Self, HarnessError> {
        let output = Command::new(path).arg("--version").output().map_err(|e| {
            HarnessError::UnknownVersion {
                path: path.to_owned(),
                detail: e.to_string(),
            }
        })?;
        let text = String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr);
        let version = ServerVersion::parse(&text).ok_or_else(|| HarnessError::UnknownVersion {
            path: path.to_owned(),
            detail: format!("unexpected output {:?}", text.trim()),
        })?;
        if version < MIN_VERSION {
            return Err(HarnessError::TooOld {
                path: path.to_owned(),
                found: version,
            });
        }
        Ok(Self {
            path: path.to_owned(),
            version,
        })
    }
}

/// The project's own pinned install, written by `infra/install-tools.sh`.
pub fn project_tools_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(".tools")
        .join("bin")
}

/// Finds a usable `nats-server`: `NATS_SERVER_BIN` if set (and then only that one), else the
/// project's pinned install, else the first one on `PATH`. The version is always checked, so an
/// old distribution package on `PATH` is refused rather than silently used.
pub fn find_nats_server() -> Result<NatsBinary, HarnessError> {
    if let Some(path) = std::env::var_os("NATS_SERVER_BIN") {
        return NatsBinary::check(Path::new(&path));
    }
    let pinned = project_tools_dir().join("nats-server");
    if pinned.is_file() {
        return NatsBinary::check(&pinned);
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join("nats-server"))
        .find(|candidate| candidate.is_file());
    match on_path {
        Some(path) => NatsBinary::check(&path),
        None => Err(HarnessError::NotFound),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_release_and_prerelease_versions() {
        assert_eq!(
            ServerVersion::parse("nats-server: v2.12.8\n"),
            Some(ServerVersion {
                major: 2,
                minor: 12,
                patch: 8
            })
        );
        assert_eq!(
            ServerVersion::parse("nats-server: v2.14.0-RC.1"),
            Some(ServerVersion {
                major: 2,
                minor: 14,
                patch: 0
            })
        );
        assert_eq!(ServerVersion::parse("garbage"), None);
    }

    #[test]
    fn orders_versions_numerically() {
        let old = ServerVersion::parse("v2.9.25").unwrap();
        let new = ServerVersion::parse("v2.12.0").unwrap();
        assert!(old < MIN_VERSION);
        assert!(new >= MIN_VERSION);
    }

    #[test]
    fn refuses_a_server_that_is_too_old() {
        // A stand-in binary that reports an old version, as Debian's 2.9 package would.
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("nats-server");
        std::fs::write(&fake, "#!/bin/sh\necho 'nats-server: v2.9.25'\n").unwrap();
        let status = Command::new("chmod").arg("+x").arg(&fake).status().unwrap();
        assert!(status.success());
        let err = NatsBinary::check(&fake).unwrap_err();
        assert!(matches!(err, HarnessError::TooOld { .. }), "{err}");
        assert!(err.to_string().contains("2.9.25"), "{err}");
        assert!(err.to_string().contains("install-tools.sh"), "{err}");
    }
}
