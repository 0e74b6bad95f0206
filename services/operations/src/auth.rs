//! Who is calling, and what they may do and see.
//!
//! Operators are listed in a TOML file (`--operators`): a name, a role and the SHA-256 of
//! their bearer token (the service never stores a token itself). Roles:
//! - `viewer`: reads sagas, incidents, rejections and statistics; INSZ numbers masked;
//! - `operator`: a viewer who may also retry, skip and cancel;
//! - `supervisor`: an operator who sees INSZ numbers in full (for the back office that must
//!   contact the citizen).
//!
//! Without a file the service is open to local callers as `local` with the `operator` role
//! (INSZ masked) — the development setup of `infra/just up`; it says so in its log.

use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Operator,
    Supervisor,
}

impl Role {
    pub fn may_act(self) -> bool {
        matches!(self, Self::Operator | Self::Supervisor)
    }

    pub fn sees_insz(self) -> bool {
        matches!(self, Self::Supervisor)
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub name: String,
    pub role: Role,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("cannot read the operators file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("the operators file {path} is not valid: {reason}")]
    Invalid { path: String, reason: String },
    #[error("no bearer token: send `authorization: Bearer <token>`")]
    Missing,
    #[error("unknown token")]
    Unknown,
}

#[derive(Debug, Deserialize)]
struct File {
    #[serde(default, rename = "operator")]
    operators: Vec<Entry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    name: String,
    role: Role,
    /// Lower-case hex SHA-256 of the token.
    token_sha256: String,
}

/// The operators the service knows.
#[derive(Debug, Clone)]
pub struct Operators {
    by_hash: HashMap<String, Caller>,
    /// Set when no file is configured: every caller is this one.
    open: Option<Caller>,
}

impl Operators {
    /// Everyone is the local operator (INSZ masked).
    pub fn open() -> Self {
        Self {
            by_hash: HashMap::new(),
            open: Some(Caller {
                name: "local".to_owned(),
                role: Role::Operator,
            }),
        }
    }

    pub fn is_open(&self) -> bool {
        self.open.is_some()
    }

    pub fn load(path: &Path) -> Result<Self, AuthError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| AuthError::Read {
            path: shown.clone(),
            source,
        })?;
        Self::parse(&text).map_err(|reason| AuthError::Invalid {
            path: shown,
            reason,
        })
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let file: File = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut by_hash = HashMap::new();
        for entry in file.operators {
            let hash = entry.token_sha256.trim().to_ascii_lowercase();
            if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!(
                    "operator {:?}: token_sha256 must be 64 hex digits",
                    entry.name
                ));
            }
            if entry.name.trim().is_empty() {
                return Err("an operator without a name".to_owned());
            }
            let caller = Caller {
                name: entry.name,
                role: entry.role,
            };
            if let Some(other) = by_hash.insert(hash, caller.clone()) {
                return Err(format!(
                    "operators {:?} and {:?} share a token",
                    other.name, caller.name
                ));
            }
        }
        Ok(Self {
            by_hash,
            open: None,
        })
    }

    /// The caller behind an `authorization` header value.
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<Caller, AuthError> {
        if let Some(open) = &self.open {
            return Ok(open.clone());
        }
        let token = authorization
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(AuthError::Missing)?;
        self.by_hash
            .get(&token_sha256(token))
            .cloned()
            .ok_or(AuthError::Unknown)
    }
}

/// The hex SHA-256 of a token, as the operators file holds it.
pub fn token_sha256(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
[[operator]]
name = "an.peeters"
role = "operator"
token_sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"

[[operator]]
name = "jan.desmet"
role = "viewer"
token_sha256 = "1B4F0E9851971998E732078544C96B36C3D01CEDF7CAA332359D6F1D83567014"
"#;

    #[test]
    fn a_token_names_its_operator_and_role() {
        let operators = Operators::parse(FILE).unwrap();
        assert_eq!(
            operators.authenticate(Some("Bearer test")).unwrap(),
            Caller {
                name: "an.peeters".into(),
                role: Role::Operator
            }
        );
        let viewer = operators.authenticate(Some("Bearer test1")).unwrap();
        assert_eq!(viewer.role, Role::Viewer);
        assert!(!viewer.role.may_act());
        assert!(matches!(
            operators.authenticate(Some("Bearer nope")),
            Err(AuthError::Unknown)
        ));
        assert!(matches!(
            operators.authenticate(None),
            Err(AuthError::Missing)
        ));
        assert!(matches!(
            operators.authenticate(Some("Basic dGVzdA==")),
            Err(AuthError::Missing)
        ));
    }

    #[test]
    fn a_bad_operators_file_is_refused_with_the_reason() {
        let short = "[[operator]]\nname = \"x\"\nrole = \"operator\"\ntoken_sha256 = \"abc\"\n";
        assert_eq!(
            Operators::parse(short).unwrap_err(),
            "operator \"x\": token_sha256 must be 64 hex digits"
        );
        let role = FILE.replace("\"viewer\"", "\"admin\"");
        assert!(
            Operators::parse(&role)
                .unwrap_err()
                .contains("unknown variant `admin`")
        );
        let shared = FILE.replace(
            "1B4F0E9851971998E732078544C96B36C3D01CEDF7CAA332359D6F1D83567014",
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        );
        assert_eq!(
            Operators::parse(&shared).unwrap_err(),
            "operators \"an.peeters\" and \"jan.desmet\" share a token"
        );
    }

    #[test]
    fn the_open_setup_is_a_local_operator_who_sees_no_insz() {
        let caller = Operators::open().authenticate(None).unwrap();
        assert_eq!(caller.name, "local");
        assert!(caller.role.may_act());
        assert!(!caller.role.sees_insz());
    }
}
