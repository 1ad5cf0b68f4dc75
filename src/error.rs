//! The one error type of the crate: every problem with caller input is one of
//! these variants, naming what was wrong and the numbers involved.

use std::fmt;

/// Shorthand for `Result<T, repconv::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong when the caller hands `repconv` bad input.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Error {
    /// A tensor or view does not have the shape the operation needs.
    ShapeMismatch {
        /// What was being checked, e.g. "input" or "output view".
        what: &'static str,
        /// The shape that was required.
        expected: Vec<usize>,
        /// The shape that was given.
        got: Vec<usize>,
    },
    /// A buffer does not have the number of elements its shape implies.
    LengthMismatch {
        /// Which buffer, e.g. "weights" or "bias".
        what: &'static str,
        /// Required length.
        expected: usize,
        /// Given length.
        got: usize,
    },
    /// A parameter is out of its valid range.
    InvalidParam {
        /// The parameter, e.g. "stride" or "groups".
        name: &'static str,
        /// Why it is invalid.
        reason: String,
    },
    /// A size computation overflowed `usize`, or exceeds [`crate::MAX_ELEMENTS`].
    TooLarge {
        /// What was being sized.
        what: &'static str,
    },
    /// The operation is valid but not supported by this build or path.
    Unsupported(String),
}

impl Error {
    pub(crate) fn invalid(name: &'static str, reason: impl Into<String>) -> Self {
        Error::InvalidParam { name, reason: reason.into() }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::ShapeMismatch { what, expected, got } => {
                write!(f, "{what}: expected shape {expected:?}, got {got:?}")
            }
            Error::LengthMismatch { what, expected, got } => {
                write!(f, "{what}: expected {expected} elements, got {got}")
            }
            Error::InvalidParam { name, reason } => write!(f, "invalid {name}: {reason}"),
            Error::TooLarge { what } => write!(
                f,
                "{what}: size overflows or exceeds the limit of {} elements",
                crate::MAX_ELEMENTS
            ),
            Error::Unsupported(what) => write!(f, "unsupported: {what}"),
        }
    }
}

impl std::error::Error for Error {}
