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
    /// A tensor the model needs is not in the checkpoint.
    MissingTensor {
        /// Its full name, e.g. `stages.0.1.conv_kxk.0.conv.weight`.
        name: String,
        /// The shape it should have had.
        expected: Vec<usize>,
    },
    /// The checkpoint holds a tensor the model has no place for.
    UnexpectedTensor {
        /// Its name in the file.
        name: String,
        /// Its shape in the file.
        shape: Vec<usize>,
    },
    /// A checkpoint tensor has the wrong shape.
    TensorShape {
        /// The tensor's name.
        name: String,
        /// The shape the model needs.
        expected: Vec<usize>,
        /// The shape in the file.
        got: Vec<usize>,
    },
    /// A checkpoint tensor has a dtype that cannot be loaded.
    TensorDtype {
        /// The tensor's name.
        name: String,
        /// The dtypes accepted, e.g. `"F32, F16 or BF16"`.
        expected: &'static str,
        /// The dtype in the file, e.g. `"I64"`.
        got: String,
    },
    /// A checkpoint tensor has values the model cannot use (e.g. a negative
    /// running variance).
    TensorValue {
        /// The tensor's name.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The file ends before the data its safetensors header describes.
    TruncatedFile {
        /// The first tensor whose data is cut off, when the header was readable.
        tensor: Option<String>,
        /// Bytes the header says the file has.
        expected_bytes: u64,
        /// Bytes it has.
        got_bytes: u64,
    },
    /// The bytes are not a safetensors file.
    NotSafetensors {
        /// What could not be read.
        reason: String,
    },
    /// Reading or writing a file failed.
    Io {
        /// The file.
        path: String,
        /// The operating system's message.
        reason: String,
    },
    /// The requested instruction set is unknown or this CPU lacks it (from
    /// `REPCONV_ISA` or [`crate::Isa::from_name`]).
    Isa(crate::IsaError),
    /// The requested precision cannot run here: bf16 needs a CPU with
    /// AVX512_BF16 and the `avx512` kernels.
    Precision {
        /// Why not.
        reason: String,
    },
}

impl From<crate::IsaError> for Error {
    fn from(e: crate::IsaError) -> Self {
        Error::Isa(e)
    }
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
            Error::MissingTensor { name, expected } => {
                write!(f, "missing tensor {name} (expected shape {expected:?})")
            }
            Error::UnexpectedTensor { name, shape } => {
                write!(f, "unexpected tensor {name} (shape {shape:?}) has no place in the model")
            }
            Error::TensorShape { name, expected, got } => {
                write!(f, "tensor {name}: expected shape {expected:?}, found {got:?}")
            }
            Error::TensorDtype { name, expected, got } => {
                write!(f, "tensor {name}: expected dtype {expected}, found {got}")
            }
            Error::TensorValue { name, reason } => write!(f, "tensor {name}: {reason}"),
            Error::TruncatedFile { tensor, expected_bytes, got_bytes } => {
                write!(f, "truncated safetensors file: ")?;
                if let Some(t) = tensor {
                    write!(f, "data of tensor {t} is cut off; ")?;
                }
                write!(f, "expected {expected_bytes} bytes, found {got_bytes}")
            }
            Error::NotSafetensors { reason } => {
                write!(f, "not a safetensors file: {}", reason.replace('\n', " "))
            }
            Error::Io { path, reason } => write!(f, "{path}: {reason}"),
            Error::Isa(e) => write!(f, "{e}"),
            Error::Precision { reason } => write!(f, "{reason}"),
        }
    }
}

impl std::error::Error for Error {}
