//! The NaN-aware comparisons every command's checks use: the library's
//! [`repconv::compare`], the one copy the CLI, the Python package and the
//! tests share.

pub use repconv::compare::*;
