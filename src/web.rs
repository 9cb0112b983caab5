//! What the API and the console share: errors as they are answered (a JSON
//! body with a status) and the token comparison. A module of its own so that
//! the API, which mounts the console's routes, and the console, which
//! answers with the API's errors, do not use each other.

pub mod error;

pub use error::ApiError;

/// Equal in time whatever the guess: the loop runs over the whole expected
/// token and never stops early.
pub fn constant_time_eq(given: &[u8], expected: &[u8]) -> bool {
    // `subtle` compares equal-length slices without an early exit; a length
    // mismatch (which reveals only the length) is false.
    subtle::ConstantTimeEq::ct_eq(given, expected).into()
}
