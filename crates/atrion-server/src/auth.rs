//! Admin tokens: named bearer secrets, compared in constant time, never shown.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use crate::Shared;
use crate::problem::Problem;

/// The shortest secret a token may have, in bytes.
pub const MIN_SECRET_LEN: usize = 16;

/// A named admin token. Its `Debug` shows the name only; the secret is never printed,
/// logged or put in an error.
#[derive(Clone)]
pub struct AdminToken {
    name: String,
    secret: Vec<u8>,
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminToken").field("name", &self.name).field("secret", &"<redacted>").finish()
    }
}

/// Why a token was refused (never quoting the secret).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The name is empty, too long, or has characters outside `[A-Za-z0-9._-]`.
    #[error("token name `{name}`: 1 to 64 of [A-Za-z0-9._-]")]
    BadName {
        /// The name.
        name: String,
    },
    /// The secret is too short or has whitespace or control characters.
    #[error("token `{name}`: the secret must be at least {MIN_SECRET_LEN} printable bytes without spaces")]
    WeakSecret {
        /// The token's name.
        name: String,
    },
    /// Two tokens share a name.
    #[error("token name `{name}` is given twice")]
    Duplicate {
        /// The name.
        name: String,
    },
    /// A line is not `name:secret`.
    #[error("line {line}: expected `name:secret`")]
    Malformed {
        /// The line (1-based).
        line: usize,
    },
}

impl AdminToken {
    /// A token named `name` (what logs and the audit trail record) with `secret`.
    pub fn new(name: &str, secret: &str) -> Result<Self, TokenError> {
        let name_ok = (1..=64).contains(&name.len())
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !name_ok {
            return Err(TokenError::BadName { name: name.to_owned() });
        }
        if secret.len() < MIN_SECRET_LEN || !secret.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(TokenError::WeakSecret { name: name.to_owned() });
        }
        Ok(AdminToken { name: name.to_owned(), secret: secret.as_bytes().to_vec() })
    }

    /// The token's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether `presented` is this token's secret (compared in constant time).
    pub(crate) fn matches(&self, presented: &[u8]) -> bool {
        bool::from(self.secret.as_slice().ct_eq(presented))
    }

    /// Tokens from text: one `name:secret` per line (or per comma-separated item); blank
    /// lines and lines starting with `#` are skipped. Names must be unique.
    pub fn parse_list(text: &str) -> Result<Vec<AdminToken>, TokenError> {
        let mut tokens: Vec<AdminToken> = Vec::new();
        let items = text.lines().enumerate().flat_map(|(i, line)| line.split(',').map(move |item| (i + 1, item)));
        for (line, item) in items {
            let item = item.trim();
            if item.is_empty() || item.starts_with('#') {
                continue;
            }
            let (name, secret) = item.split_once(':').ok_or(TokenError::Malformed { line })?;
            let token = AdminToken::new(name.trim(), secret.trim())?;
            if tokens.iter().any(|t| t.name == token.name) {
                return Err(TokenError::Duplicate { name: token.name });
            }
            tokens.push(token);
        }
        Ok(tokens)
    }
}

/// The name of the token a request presented: which token, never what it was.
pub(crate) fn who(tokens: &[AdminToken], presented: &[u8]) -> Option<String> {
    // Every token is compared (no early exit), each in constant time.
    let mut found = None;
    for t in tokens {
        if bool::from(t.secret.as_slice().ct_eq(presented)) {
            found = Some(t.name.clone());
        }
    }
    found
}

/// An admin request, authenticated: the token's name, for the audit trail.
#[derive(Debug, Clone)]
pub(crate) struct Admin(pub String);

/// A refused admin request: `401` with `WWW-Authenticate: Bearer`, or `403` when the server
/// has no tokens at all.
pub(crate) struct Refused(Problem);

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        let unauthorized = self.0.status == StatusCode::UNAUTHORIZED.as_u16();
        let mut response = self.0.into_response();
        if unauthorized {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"atrion\""));
        }
        response
    }
}

impl FromRequestParts<Arc<Shared>> for Admin {
    type Rejection = Refused;

    async fn from_request_parts(parts: &mut Parts, s: &Arc<Shared>) -> Result<Self, Self::Rejection> {
        if s.config.admin_tokens.is_empty() {
            return Err(Refused(Problem::new(
                StatusCode::FORBIDDEN,
                "admin-disabled",
                "Administration is disabled",
                "this server has no admin tokens",
            )));
        }
        let presented = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        let Some(presented) = presented else {
            refused(s, parts.uri.path(), "no token");
            return Err(Refused(Problem::new(
                StatusCode::UNAUTHORIZED,
                "missing-token",
                "An admin token is needed",
                "send `Authorization: Bearer <token>`",
            )));
        };
        match who(&s.config.admin_tokens, presented.as_bytes()) {
            Some(name) => Ok(Admin(name)),
            None => {
                tracing::warn!(target: "atrion::audit", path = %parts.uri.path(), "refused: a token that is not ours");
                refused(s, parts.uri.path(), "a token that is not ours");
                Err(Refused(Problem::new(
                    StatusCode::UNAUTHORIZED,
                    "invalid-token",
                    "The admin token is not valid",
                    "the bearer token matches none of this server's tokens",
                )))
            }
        }
    }
}

/// Records a refused attempt in the audit trail, off the request's path.
fn refused(s: &Arc<Shared>, path: &str, why: &str) {
    if s.config.policy.is_none() {
        return;
    }
    let (s, path, why) = (s.clone(), path.to_owned(), why.to_owned());
    tokio::spawn(async move {
        crate::policies::audit(&s, "-", crate::policies::Act::new("auth", Some(path)).failed(why)).await;
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_parse_and_never_show_their_secret() {
        let list =
            AdminToken::parse_list("# ops\nalice:aaaaaaaaaaaaaaaa1\n\nbob : bbbbbbbbbbbbbbbb2, ci:cccccccccccccccc3")
                .unwrap();
        let names: Vec<&str> = list.iter().map(AdminToken::name).collect();
        assert_eq!(names, ["alice", "bob", "ci"]);
        assert!(!format!("{list:?}").contains("aaaa"));
        assert_eq!(who(&list, b"bbbbbbbbbbbbbbbb2").as_deref(), Some("bob"));
        assert_eq!(who(&list, b"bbbbbbbbbbbbbbbb"), None);
        for (text, err) in [
            ("x:short", TokenError::WeakSecret { name: "x".into() }),
            ("bad name:aaaaaaaaaaaaaaaa1", TokenError::BadName { name: "bad name".into() }),
            ("a:aaaaaaaaaaaaaaaa1\na:bbbbbbbbbbbbbbbb1", TokenError::Duplicate { name: "a".into() }),
            ("no-colon", TokenError::Malformed { line: 1 }),
        ] {
            let e = AdminToken::parse_list(text).unwrap_err();
            assert_eq!(e, err);
            assert!(!e.to_string().contains("aaaaaaaa") && !e.to_string().contains("short"), "{e}");
        }
    }
}
