//! The file level: safetensors bytes in (through the `safetensors` crate,
//! with every failure mapped to a typed [`Error`]), f32/f16/bf16 tensors out,
//! and f32 tensors back to safetensors bytes.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap};
use std::io::{Read, Write};
use std::path::Path;

use safetensors::tensor::{SafeTensorError, TensorInfo};
use safetensors::{Dtype, SafeTensors, View};

use crate::error::{Error, Result};

/// The dtypes the loader converts to f32.
pub(crate) const FLOAT_DTYPES: &str = "F32, F16 or BF16";

/// Whether `name` is a BatchNorm step counter (`…num_batches_tracked`), which
/// inference does not use and the loader skips.
pub(crate) fn is_batch_counter(name: &str) -> bool {
    name == "num_batches_tracked" || name.ends_with(".num_batches_tracked")
}

/// `(name, shape, f32 data)`.
pub(crate) type RawTensor = (String, Vec<usize>, Vec<f32>);

/// A parsed safetensors file that hands out tensors by name, converted to
/// f32, and remembers which ones were taken so the rest can be reported.
pub(crate) struct TensorFile<'a> {
    st: SafeTensors<'a>,
    taken: BTreeSet<String>,
}

impl<'a> TensorFile<'a> {
    /// Parses `bytes` (no tensor data is copied).
    pub(crate) fn parse(bytes: &'a [u8]) -> Result<Self> {
        match SafeTensors::deserialize(bytes) {
            Ok(st) => Ok(TensorFile { st, taken: BTreeSet::new() }),
            Err(e) => Err(diagnose(bytes, e)),
        }
    }

    /// Whether the file has a tensor called `name`.
    pub(crate) fn has(&self, name: &str) -> bool {
        self.st.tensor(name).is_ok()
    }

    /// The shape of `name`, if present.
    pub(crate) fn shape(&self, name: &str) -> Option<Vec<usize>> {
        self.st.tensor(name).ok().map(|t| t.shape().to_vec())
    }

    /// The tensor `name` as f32, checking its shape against `expected` and
    /// that every value is finite; marks it as used.
    pub(crate) fn take(&mut self, name: &str, expected: &[usize]) -> Result<Vec<f32>> {
        let Ok(view) = self.st.tensor(name) else {
            return Err(Error::MissingTensor {
                name: name.to_string(),
                expected: expected.to_vec(),
            });
        };
        if view.shape() != expected {
            return Err(Error::TensorShape {
                name: name.to_string(),
                expected: expected.to_vec(),
                got: view.shape().to_vec(),
            });
        }
        let data = to_f32(name, view.dtype(), view.data())?;
        if let Some(i) = data.iter().position(|v| !v.is_finite()) {
            return Err(Error::TensorValue {
                name: name.to_string(),
                reason: format!("element {i} is {}", data[i]),
            });
        }
        self.taken.insert(name.to_string());
        Ok(data)
    }

    /// Fails on the first tensor (in name order) that was not taken and is
    /// not a BatchNorm step counter.
    pub(crate) fn check_all_taken(&self) -> Result<()> {
        let mut names = self.st.names();
        names.sort_unstable();
        for name in names {
            if !self.taken.contains(name) && !is_batch_counter(name) {
                let shape = self.shape(name).unwrap_or_default();
                return Err(Error::UnexpectedTensor { name: name.to_string(), shape });
            }
        }
        Ok(())
    }

    /// Every tensor, sorted by name, as `(name, shape, f32 data)`.
    pub(crate) fn all_f32(&self) -> Result<Vec<RawTensor>> {
        let mut out = self
            .st
            .iter()
            .map(|(name, view)| {
                Ok((
                    name.to_string(),
                    view.shape().to_vec(),
                    to_f32(name, view.dtype(), view.data())?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }
}

/// Converts little-endian F32/F16/BF16 bytes to f32.
fn to_f32(name: &str, dtype: Dtype, bytes: &[u8]) -> Result<Vec<f32>> {
    Ok(match dtype {
        Dtype::F32 => {
            bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
        }
        Dtype::F16 => bytes
            .chunks_exact(2)
            .map(|b| half::f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32())
            .collect(),
        Dtype::BF16 => bytes
            .chunks_exact(2)
            .map(|b| half::bf16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32())
            .collect(),
        other => {
            return Err(Error::TensorDtype {
                name: name.to_string(),
                expected: FLOAT_DTYPES,
                got: format!("{other:?}"),
            });
        }
    })
}

/// Turns a `safetensors` error into ours; for a file that ends early, reads
/// the (valid) header again to name the first tensor whose data is cut off.
fn diagnose(bytes: &[u8], e: SafeTensorError) -> Error {
    let len = bytes.len() as u64;
    match e {
        SafeTensorError::InvalidHeaderLength => {
            // The header length is plausible but points past the end: a file
            // cut inside its header, if what is there starts like one.
            let n = header_len(bytes).unwrap_or(0);
            if bytes.get(8) == Some(&b'{') {
                Error::TruncatedFile {
                    tensor: None,
                    expected_bytes: n.saturating_add(8),
                    got_bytes: len,
                }
            } else {
                Error::NotSafetensors {
                    reason: format!("header length {n} exceeds the file size {len}"),
                }
            }
        }
        SafeTensorError::MetadataIncompleteBuffer => match data_layout(bytes) {
            Some((start, infos)) => {
                let end = infos.iter().map(|(_, i)| i.data_offsets.1).max().unwrap_or(0) as u64;
                let expected = start.saturating_add(end);
                if expected > len {
                    let avail = len.saturating_sub(start);
                    let cut = infos
                        .iter()
                        .filter(|(_, i)| i.data_offsets.1 as u64 > avail)
                        .min_by_key(|(_, i)| i.data_offsets.0)
                        .map(|(n, _)| n.clone());
                    Error::TruncatedFile { tensor: cut, expected_bytes: expected, got_bytes: len }
                } else {
                    Error::NotSafetensors {
                        reason: format!("{} bytes after the last tensor's data", len - expected),
                    }
                }
            }
            None => Error::NotSafetensors { reason: "data does not match the header".into() },
        },
        SafeTensorError::HeaderTooSmall => Error::NotSafetensors {
            reason: format!("{len} bytes, shorter than the 8-byte header length"),
        },
        SafeTensorError::HeaderTooLarge => Error::NotSafetensors {
            reason: format!(
                "header length {} is implausibly large",
                header_len(bytes).unwrap_or(0)
            ),
        },
        SafeTensorError::InvalidHeader(_) => {
            Error::NotSafetensors { reason: "header is not UTF-8".into() }
        }
        SafeTensorError::InvalidHeaderDeserialization(e) | SafeTensorError::JsonError(e) => {
            Error::NotSafetensors { reason: format!("header is not valid JSON metadata: {e}") }
        }
        SafeTensorError::InvalidOffset(name) => Error::NotSafetensors {
            reason: format!("tensor {name} has data offsets that overlap or leave gaps"),
        },
        other => Error::NotSafetensors { reason: other.to_string() },
    }
}

fn header_len(bytes: &[u8]) -> Option<u64> {
    let head: [u8; 8] = bytes.get(..8)?.try_into().ok()?;
    Some(u64::from_le_bytes(head))
}

/// Start of the data section and every tensor's info, when the header parses
/// (used only to explain a size mismatch the crate has already found).
fn data_layout(bytes: &[u8]) -> Option<(u64, Vec<(String, TensorInfo)>)> {
    let n = usize::try_from(header_len(bytes)?).ok()?;
    let header = bytes.get(8..8usize.checked_add(n)?)?;
    let map: HashMap<String, serde_json::Value> = serde_json::from_slice(header).ok()?;
    let infos = map
        .into_iter()
        .filter(|(k, _)| k != "__metadata__")
        .map(|(k, v)| Some((k, serde_json::from_value::<TensorInfo>(v).ok()?)))
        .collect::<Option<Vec<_>>>()?;
    Some((n as u64 + 8, infos))
}

/// One tensor to write.
pub(crate) struct OutTensor {
    pub(crate) name: String,
    pub(crate) dtype: Dtype,
    pub(crate) shape: Vec<usize>,
    pub(crate) bytes: Vec<u8>,
}

impl OutTensor {
    pub(crate) fn f32(name: String, shape: Vec<usize>, data: &[f32]) -> Self {
        let bytes = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        OutTensor { name, dtype: Dtype::F32, shape, bytes }
    }

    /// PyTorch's `num_batches_tracked`: an I64 scalar (written as 0).
    pub(crate) fn batch_counter(name: String) -> Self {
        OutTensor { name, dtype: Dtype::I64, shape: Vec::new(), bytes: vec![0; 8] }
    }
}

impl View for &OutTensor {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

/// Serialises `tensors` (with PyTorch's `{"format": "pt"}` metadata, which
/// some loaders require).
pub(crate) fn serialize(tensors: &[OutTensor]) -> Result<Vec<u8>> {
    let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::serialize(tensors.iter().map(|t| (t.name.as_str(), t)), Some(meta))
        .map_err(|e| Error::invalid("safetensors output", e.to_string()))
}

fn io_error(path: &Path, e: &std::io::Error) -> Error {
    Error::Io { path: path.display().to_string(), reason: e.to_string() }
}

/// Reads a whole regular file. Anything else (a directory, a FIFO, a device
/// such as `/dev/zero`, whose reading would never end) is an [`Error::Io`]
/// saying "not a regular file", found without blocking: on Unix the path is
/// opened non-blocking (opening a FIFO that has no writer would otherwise
/// wait for one forever) and the type is checked on the opened file, so the
/// path cannot change in between. The buffer is reserved fallibly: a file
/// too large for memory is an [`Error::Io`] too, never an abort.
pub fn read_file(path: impl AsRef<Path>) -> Result<Vec<u8>> {
    let path = path.as_ref();
    let fail = |reason: String| Error::Io { path: path.display().to_string(), reason };
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // Reads of a regular file ignore the flag.
        options.custom_flags(libc::O_NONBLOCK);
    }
    let file = options.open(path).map_err(|e| io_error(path, &e))?;
    let meta = file.metadata().map_err(|e| io_error(path, &e))?;
    if !meta.is_file() {
        return Err(fail("not a regular file".into()));
    }
    let mut bytes = Vec::new();
    usize::try_from(meta.len())
        .ok()
        .and_then(|len| bytes.try_reserve_exact(len).ok())
        .ok_or_else(|| fail(format!("cannot allocate {} bytes to read it", meta.len())))?;
    // At most the size seen above, should the file grow meanwhile.
    file.take(meta.len()).read_to_end(&mut bytes).map_err(|e| io_error(path, &e))?;
    Ok(bytes)
}

/// Writes `bytes` to `path` without ever leaving a partial file there: the
/// data goes to a temporary file in the same directory, is flushed to disk,
/// then renamed over `path` (or, when `overwrite` is false, linked to `path`
/// only if nothing is there, so a file created meanwhile is not clobbered).
/// The temporary file is removed on any failure.
pub fn write_file_atomic(path: impl AsRef<Path>, bytes: &[u8], overwrite: bool) -> Result<()> {
    let path = path.as_ref();
    if !overwrite && path.exists() {
        return Err(Error::Io {
            path: path.display().to_string(),
            reason: "already exists (pass --force to overwrite)".into(),
        });
    }
    let file_name = path.file_name().ok_or_else(|| Error::Io {
        path: path.display().to_string(),
        reason: "not a file name".into(),
    })?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let tmp = dir.join(format!(".{}.{}.tmp", file_name.to_string_lossy(), std::process::id()));
    let result = (|| -> Result<()> {
        let mut f = std::fs::File::create(&tmp).map_err(|e| io_error(&tmp, &e))?;
        f.write_all(bytes).map_err(|e| io_error(&tmp, &e))?;
        f.sync_all().map_err(|e| io_error(&tmp, &e))?;
        drop(f);
        if overwrite {
            std::fs::rename(&tmp, path).map_err(|e| io_error(path, &e))
        } else {
            match std::fs::hard_link(&tmp, path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(Error::Io {
                    path: path.display().to_string(),
                    reason: "already exists (pass --force to overwrite)".into(),
                }),
                // Filesystems without hard links: checked above, rename.
                Err(_) => std::fs::rename(&tmp, path).map_err(|e| io_error(path, &e)),
            }
        }
    })();
    let _ = std::fs::remove_file(&tmp);
    result
}
