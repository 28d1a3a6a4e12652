//! The path normalization of proxy mode: one canonical spelling per resource, so that a
//! route is decided on, and the upstream sees, the same path whatever variant the client
//! sent (`//file.txt`, `/./file.txt`, `/%66ile.txt`, `/x/../file.txt`).
//!
//! RFC 3986 normalization (section 6.2.2), in its order: escapes of unreserved characters
//! are decoded and the remaining escapes written in uppercase hex, then dot-segments are
//! removed (section 5.2.4), and empty segments merged (`//` is `/`, a trailing `/` kept).
//! Bytes that a URI may not hold raw (`"`, `{`, non-ASCII, …), which HTTP parsers let
//! through, are percent-encoded: their only valid spelling is the escape.
//!
//! Refused, rather than guessed at:
//! - an escape that is not `%` and two hex digits, and `%00` (an encoded NUL);
//! - an encoded `/` (`%2F`) or `\` (`%5C`), and a raw `\`: upstreams disagree on whether
//!   they separate segments (decoding them would turn `..%2F` into a dot-segment the route
//!   never saw; keeping them would let `/a%2Fb` pass for `/a/b` on an upstream that decodes
//!   before routing). Envoy's `REJECT_REQUEST` action for escaped slashes does the same;
//! - a `..` that would climb above the root: no client that resolves its own references
//!   sends one, so it is a probe, and clamping it would only hide that;
//! - a path that does not start with `/` (`*`, for instance).
//!
//! A path already in normal form costs one scan and no allocation.

use std::borrow::Cow;

/// Why a request path cannot be normalized (the request is refused with `400`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PathError {
    /// The path does not start with `/`.
    #[error("the path does not start with `/`")]
    NotAbsolute,
    /// A `%` not followed by two hex digits.
    #[error("`%` at byte {at} is not followed by two hex digits")]
    BadEscape {
        /// The byte offset of the `%`.
        at: usize,
    },
    /// `%00`.
    #[error("an encoded NUL (`%00`) at byte {at}")]
    EncodedNul {
        /// The byte offset of the `%`.
        at: usize,
    },
    /// `%2F`, `%5C` or a raw `\`: a separator whose meaning upstreams disagree on.
    #[error("an encoded `/` or `\\` (or a raw `\\`) at byte {at}")]
    AmbiguousSeparator {
        /// Its byte offset.
        at: usize,
    },
    /// A `..` segment above the root.
    #[error("a `..` segment climbs above the root")]
    AboveRoot,
}

/// Whether `b` may stand raw in a path segment: RFC 3986 `pchar` less `%` (unreserved,
/// sub-delims, `:` and `@`).
fn is_pchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@".contains(&b)
}

/// RFC 3986 `unreserved`: an escape of one of these is the character itself.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~".contains(&b)
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'A'..=b'F' => Some(b - b'A' + 10),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    }
}

const UPPER_HEX: &[u8; 16] = b"0123456789ABCDEF";

/// The normal form of a request path (without its query): the path itself, borrowed, when
/// it is already normal. See the module's documentation for the rules and refusals.
///
/// ```
/// use atrion_server::normalize_path;
///
/// for variant in ["/file.txt", "//file.txt", "/./file.txt", "/%66ile.txt", "/x/../file.txt"] {
///     assert_eq!(normalize_path(variant).unwrap(), "/file.txt");
/// }
/// assert_eq!(normalize_path("/a%2fb").unwrap_err().to_string(), "an encoded `/` or `\\` (or a raw `\\`) at byte 2");
/// ```
pub fn normalize_path(path: &str) -> Result<Cow<'_, str>, PathError> {
    if is_normal(path.as_bytes()) { Ok(Cow::Borrowed(path)) } else { rewrite(path.as_bytes()).map(Cow::Owned) }
}

/// Whether `path` is certainly in normal form: starts with `/`, no empty, `.` or `..`
/// segment but a trailing empty one, only `pchar`s, and every escape in uppercase hex,
/// of a byte that must stay escaped. `false` sends it to [`rewrite`], which also decides
/// every refusal.
fn is_normal(path: &[u8]) -> bool {
    if path.first() != Some(&b'/') {
        return false;
    }
    let mut start = 1; // the current segment's first byte
    let mut i = 1;
    while i < path.len() {
        match path[i] {
            b'/' => {
                if !plain_segment(&path[start..i]) {
                    return false;
                }
                start = i + 1;
                i += 1;
            }
            b'%' => {
                let (Some(&h), Some(&l)) = (path.get(i + 1), path.get(i + 2)) else { return false };
                let (Some(hv), Some(lv)) = (hex(h), hex(l)) else { return false };
                let v = hv << 4 | lv;
                if h.is_ascii_lowercase() || l.is_ascii_lowercase() || is_unreserved(v) || matches!(v, 0 | b'/' | b'\\')
                {
                    return false;
                }
                i += 3;
            }
            b if is_pchar(b) => i += 1,
            _ => return false,
        }
    }
    // The last segment may be empty (a trailing slash), never a dot-segment.
    let last = &path[start..];
    last.is_empty() || plain_segment(last)
}

/// A segment that stays as it is: not empty, not `.` nor `..`.
fn plain_segment(seg: &[u8]) -> bool {
    !matches!(seg, b"" | b"." | b"..")
}

/// The normal form, built: segment by segment, each canonicalized (escapes decoded or
/// uppercased, raw bytes escaped), then dot-segments resolved and empty ones dropped.
fn rewrite(path: &[u8]) -> Result<String, PathError> {
    let rest = path.strip_prefix(b"/").ok_or(PathError::NotAbsolute)?;
    // Where each kept segment ends in `out`, to pop it on `..`.
    let mut out = String::with_capacity(path.len() + 8);
    let mut ends: Vec<usize> = Vec::new();
    let mut trailing = false;
    let mut offset = 1;
    let mut segments = rest.split(|&b| b == b'/').peekable();
    while let Some(raw) = segments.next() {
        let last = segments.peek().is_none();
        let at = offset;
        offset += raw.len() + 1;
        let mark = out.len();
        out.push('/');
        canonical_segment(raw, at, &mut out)?;
        match &out.as_bytes()[mark + 1..] {
            b"" | b"." => {
                out.truncate(mark);
                trailing = last;
            }
            b".." => {
                out.truncate(mark);
                ends.pop().ok_or(PathError::AboveRoot)?;
                out.truncate(ends.last().copied().unwrap_or(0));
                trailing = last;
            }
            _ => {
                ends.push(out.len());
                trailing = false;
            }
        }
    }
    if trailing || out.is_empty() {
        out.push('/');
    }
    Ok(out)
}

/// Appends the canonical spelling of one raw segment (`at`: its offset in the path, for
/// errors).
fn canonical_segment(raw: &[u8], at: usize, out: &mut String) -> Result<(), PathError> {
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        if b == b'%' {
            let bad = PathError::BadEscape { at: at + i };
            let (Some(&h), Some(&l)) = (raw.get(i + 1), raw.get(i + 2)) else { return Err(bad) };
            let (Some(hv), Some(lv)) = (hex(h), hex(l)) else { return Err(bad) };
            match hv << 4 | lv {
                0 => return Err(PathError::EncodedNul { at: at + i }),
                b'/' | b'\\' => return Err(PathError::AmbiguousSeparator { at: at + i }),
                v if is_unreserved(v) => out.push(char::from(v)),
                v => escape(v, out),
            }
            i += 3;
        } else if b == b'\\' {
            return Err(PathError::AmbiguousSeparator { at: at + i });
        } else {
            if is_pchar(b) {
                out.push(char::from(b))
            } else {
                escape(b, out)
            }
            i += 1;
        }
    }
    Ok(())
}

fn escape(b: u8, out: &mut String) {
    out.push('%');
    out.push(char::from(UPPER_HEX[usize::from(b >> 4)]));
    out.push(char::from(UPPER_HEX[usize::from(b & 15)]));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(p: &str) -> Result<String, PathError> {
        normalize_path(p).map(Cow::into_owned)
    }

    #[test]
    fn variants_of_one_file_are_one_path() {
        for p in [
            "/file.txt",
            "//file.txt",
            "/./file.txt",
            "/%66ile.txt",
            "/%66%69%6C%65%2E%74%78%74",
            "/x/../file.txt",
            "/x/%2e%2E/file.txt",
            "///a/./../file.txt",
            "/x/y/../../file.txt",
        ] {
            assert_eq!(norm(p).as_deref(), Ok("/file.txt"), "{p}");
        }
    }

    #[test]
    fn rfc3986_dot_segments_and_slashes() {
        let cases = [
            ("/", "/"),
            ("//", "/"),
            ("/.", "/"),
            ("/a/..", "/"),
            ("/a/.", "/a/"),
            ("/a/b/..", "/a/"),
            ("/a/b/../", "/a/"),
            ("/a/./b/", "/a/b/"),
            ("/a//b//", "/a/b/"),
            ("/a/b/c/./../../g", "/a/g"),
            ("/mid/content=5/../6", "/mid/6"),
            ("/..a/.b/a..", "/..a/.b/a.."),
            ("/%7euser", "/~user"),
            ("/a%3bb", "/a%3Bb"),
            ("/a%C3%A9", "/a%C3%A9"),
            ("/a%c3%a9", "/a%C3%A9"),
            ("/{x}", "/%7Bx%7D"),
            ("/é", "/%C3%A9"),
            ("/a b", "/a%20b"),
        ];
        for (p, n) in cases {
            assert_eq!(norm(p).as_deref(), Ok(n), "{p}");
        }
    }

    #[test]
    fn normal_paths_are_borrowed() {
        for p in ["/", "/file.txt", "/a/b/", "/users/42/orders", "/a%3Bb", "/a;b=c:d@e", "/..a/.b"] {
            assert!(matches!(normalize_path(p), Ok(Cow::Borrowed(_))), "{p}");
        }
    }

    #[test]
    fn what_cannot_be_normalized_is_refused() {
        assert_eq!(norm("*"), Err(PathError::NotAbsolute));
        assert_eq!(norm(""), Err(PathError::NotAbsolute));
        assert_eq!(norm("/a%zz"), Err(PathError::BadEscape { at: 2 }));
        assert_eq!(norm("/a%4"), Err(PathError::BadEscape { at: 2 }));
        assert_eq!(norm("/a%"), Err(PathError::BadEscape { at: 2 }));
        assert_eq!(norm("/a%00"), Err(PathError::EncodedNul { at: 2 }));
        assert_eq!(norm("/a%2fb"), Err(PathError::AmbiguousSeparator { at: 2 }));
        assert_eq!(norm("/a/b%5C"), Err(PathError::AmbiguousSeparator { at: 4 }));
        assert_eq!(norm("/a\\..\\b"), Err(PathError::AmbiguousSeparator { at: 2 }));
        assert_eq!(norm("/.."), Err(PathError::AboveRoot));
        assert_eq!(norm("/a/../.."), Err(PathError::AboveRoot));
        assert_eq!(norm("/%2e%2e/etc/passwd"), Err(PathError::AboveRoot));
    }
}
