//! Retries as a client marks them: the header and its parsing, shared by the tower layer and
//! the Node and Python packages' middlewares (docs/DESIGN.md §7.2, "Retries").

/// The header a client sets on a retry: the retry's number (`1` for the first retry). A
/// retry is decided one priority tier lower per retry ([`crate::Priority::for_attempt`]), so
/// that under a retry surge the route sheds retries before first tries. Absent, `0` or not a
/// number: a first try.
pub const RETRY_ATTEMPT_HEADER: &str = "x-retry-attempt";

/// The retry's number in a value of [`RETRY_ATTEMPT_HEADER`]: a whole number, spaces around it
/// allowed; anything else is a first try (0). A header is the client's word, never an error:
/// a malformed one costs the request nothing.
pub fn parse_retry_attempt(value: &str) -> u32 {
    value.trim().parse::<u32>().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_whole_number_is_the_attempt_and_anything_else_a_first_try() {
        assert_eq!(parse_retry_attempt("2"), 2);
        assert_eq!(parse_retry_attempt(" 3 "), 3);
        for first in ["", "0", "-1", "1.5", "two", "99999999999", "+"] {
            assert_eq!(parse_retry_attempt(first), 0, "{first:?}");
        }
    }
}
