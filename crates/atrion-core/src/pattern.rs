//! Route patterns: which routes a per-route configuration or a policy applies to.
//!
//! A pattern is an exact route id (`GET /users`), or a glob: `*` matches any run of
//! characters (`/` included, so `GET /reports/*` is a prefix), `?` exactly one character.
//! When several patterns match a route, the most specific wins: an exact id over any glob,
//! then the glob with more literal characters. Two globs of equal specificity that can match
//! the same route are ambiguous; [`RoutePattern::overlaps`] finds them, and the policy
//! layer refuses them.

use crate::engine::EngineError;
use crate::limits::check_route_id;

/// A parsed route pattern.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RoutePattern {
    text: Box<str>,
    glob: bool,
    literals: usize,
}

impl RoutePattern {
    /// Parses `pattern`: 1 to [`MAX_ROUTE_ID`](crate::limits::MAX_ROUTE_ID) bytes; a glob if it has `*` or `?`.
    pub fn parse(pattern: &str) -> Result<Self, EngineError> {
        check_route_id(pattern).map_err(|e| EngineError::InvalidRouteId { len: e.len })?;
        let glob = pattern.contains(['*', '?']);
        let literals = pattern.chars().filter(|c| !matches!(c, '*' | '?')).count();
        Ok(RoutePattern { text: pattern.into(), glob, literals })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether it is a glob (else an exact route id).
    pub fn is_glob(&self) -> bool {
        self.glob
    }

    /// How specific it is: exact ids rank above every glob, then globs by their literal
    /// characters. The larger wins.
    pub fn specificity(&self) -> (bool, usize) {
        (!self.glob, self.literals)
    }

    /// Whether `route` matches.
    pub fn matches(&self, route: &str) -> bool {
        if !self.glob {
            return route == &*self.text;
        }
        glob_match(self.text.as_bytes(), route.as_bytes())
    }

    /// Whether some route matches both patterns.
    pub fn overlaps(&self, other: &RoutePattern) -> bool {
        match (self.glob, other.glob) {
            (false, false) => self.text == other.text,
            (true, false) => self.matches(&other.text),
            (false, true) => other.matches(&self.text),
            (true, true) => globs_intersect(&tokens(&self.text), &tokens(&other.text)),
        }
    }
}

impl std::fmt::Display for RoutePattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// The length of the UTF-8 character that starts with byte `b` (1 for a stray byte).
fn char_len(b: u8) -> usize {
    match b {
        0xF0.. => 4,
        0xE0.. => 3,
        0xC0.. => 2,
        _ => 1,
    }
}

/// Glob matching with one backtrack point (the last `*`): linear in practice.
fn glob_match(p: &[u8], s: &[u8]) -> bool {
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        match p.get(pi) {
            Some(b'*') => {
                star = Some((pi, si));
                pi += 1;
            }
            Some(b'?') => {
                pi += 1;
                si += char_len(s[si]);
            }
            Some(&c) if c == s[si] => {
                pi += 1;
                si += 1;
            }
            _ => match star {
                // The last star takes one more character, and matching resumes after it.
                Some((sp, ss)) => {
                    let next = ss + char_len(s[ss]);
                    star = Some((sp, next));
                    pi = sp + 1;
                    si = next;
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Tok {
    Star,
    One,
    Lit(char),
}

fn tokens(p: &str) -> Vec<Tok> {
    p.chars()
        .map(|c| match c {
            '*' => Tok::Star,
            '?' => Tok::One,
            c => Tok::Lit(c),
        })
        .collect()
}

/// Whether two globs match a common string: a search over pairs of positions, each pair
/// visited once (patterns are at most [`crate::limits::MAX_ROUTE_ID`] bytes; the policy
/// layer bounds them further, [`crate::limits::MAX_POLICY_PATTERN`]).
fn globs_intersect(a: &[Tok], b: &[Tok]) -> bool {
    let w = b.len() + 1;
    let mut seen = vec![false; (a.len() + 1) * w];
    let mut stack = vec![(0usize, 0usize)];
    while let Some((i, j)) = stack.pop() {
        if std::mem::replace(&mut seen[i * w + j], true) {
            continue;
        }
        if i == a.len() && j == b.len() {
            return true;
        }
        let (x, y) = (a.get(i).copied(), b.get(j).copied());
        // A star may match nothing, or take a character the other side produces.
        if x == Some(Tok::Star) {
            stack.push((i + 1, j));
            if j < b.len() {
                stack.push((i, j + 1));
            }
        }
        if y == Some(Tok::Star) {
            stack.push((i, j + 1));
            if i < a.len() {
                stack.push((i + 1, j));
            }
        }
        if let (Some(x), Some(y)) = (x, y) {
            let both = match (x, y) {
                (Tok::Star, _) | (_, Tok::Star) => false,
                (Tok::Lit(c), Tok::Lit(d)) => c == d,
                _ => true,
            };
            if both {
                stack.push((i + 1, j + 1));
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> RoutePattern {
        RoutePattern::parse(s).unwrap()
    }

    #[test]
    fn globs_match_as_documented() {
        assert!(p("GET /users").matches("GET /users"));
        assert!(!p("GET /users").matches("GET /users/1"));
        assert!(p("GET /reports/*").matches("GET /reports/"));
        assert!(p("GET /reports/*").matches("GET /reports/2026/q4"));
        assert!(!p("GET /reports/*").matches("GET /report"));
        assert!(p("* /users/*/orders").matches("POST /users/42/orders"));
        assert!(!p("* /users/*/orders").matches("POST /users/42/orders/1"));
        assert!(p("GET /u?").matches("GET /ué"), "? takes one character, not one byte");
        assert!(!p("GET /u?").matches("GET /u"));
        assert!(p("*a*b*").matches("xxaxxbxx"));
        assert!(!p("*a*b*").matches("xxbxxaxx"));
        assert!(p("*").matches("anything"));
    }

    #[test]
    fn specificity_ranks_exact_ids_then_literals() {
        assert!(p("GET /a").specificity() > p("GET /a*").specificity());
        assert!(p("GET /ab*").specificity() > p("GET /a*").specificity());
        assert_eq!(p("GET /a*").specificity(), p("*GET /a").specificity());
    }

    #[test]
    fn overlap_is_found_between_globs_and_ids() {
        assert!(p("GET /a*").overlaps(&p("*/a")), "`GET /a/a` matches both");
        assert!(!p("GET /a*").overlaps(&p("POST *")));
        assert!(p("a?c").overlaps(&p("ab?")));
        assert!(!p("a?c").overlaps(&p("ab?d")));
        assert!(p("x*").overlaps(&p("x")) && p("x").overlaps(&p("x*")));
        assert!(!p("x").overlaps(&p("y")));
        assert!(p("*x*").overlaps(&p("*y*")));
        assert!(!p("a*").overlaps(&p("b*")));
    }
}
