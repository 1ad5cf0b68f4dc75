"""repconv: SIMD NCHW convolutions and MobileOne for numpy.

Arrays passed to a forward pass (``x`` and ``out``) must be numpy arrays of
dtype float32, C-contiguous; they are read and written in place, never
converted or copied (a float64 or non-contiguous array raises DTypeError or
LayoutError). Weights and state dicts are converted to float32 (they are
copied anyway). Every forward pass releases the GIL.
"""

import os
from typing import Any, Dict, List, Literal, Mapping, Optional, Tuple, Union

import numpy as np
import numpy.typing as npt

__version__: str

_IntOrPair = Union[int, Tuple[int, int]]
_Path = Union[str, "os.PathLike[str]"]
_F32Array = npt.NDArray[np.float32]
_Precision = Optional[Literal["f32", "bf16"]]

class Error(Exception):
    """Base class of every error repconv reports."""

class ShapeError(Error, ValueError):
    """An array has the wrong rank or shape (also a ValueError)."""

class DTypeError(Error, TypeError):
    """An array is not float32 (also a TypeError)."""

class LayoutError(Error, ValueError):
    """An array is not C-contiguous, not aligned, not writeable, or overlaps
    another argument (also a ValueError)."""

class ParamError(Error, ValueError):
    """A parameter is out of range (also a ValueError)."""

class IsaError(Error, ValueError):
    """An instruction set is unknown or this CPU lacks it (also a ValueError)."""

class PrecisionError(Error, ValueError):
    """A precision is unknown, or this CPU cannot run it: bf16 needs
    AVX512_BF16 and the avx512 kernels, or REPCONV_BF16=emulated for the slow
    software model (also a ValueError)."""

class FormatError(Error, ValueError):
    """A checkpoint is not one this library can load; the message names the
    tensor (also a ValueError)."""

class IoError(Error, OSError):
    """A file cannot be read or written (also an OSError)."""

def isa_best() -> str:
    """The best instruction set this CPU supports: "avx512", "avx2" or "portable"."""

def isa_available() -> List[str]:
    """Every instruction set this CPU supports, best first (ending with "portable")."""

def isa_default() -> str:
    """The instruction set used when ``isa=None``: $REPCONV_ISA if set (read
    once per process), else ``isa_best()``."""

class Conv2d:
    """A 2-D convolution over NCHW float32 arrays, with PyTorch's arguments.

    ``weight`` is OIHW: (out_channels, in_channels / groups, kh, kw); ``bias``
    has out_channels values. ``stride``, ``padding`` (zeros, both sides) and
    ``dilation`` are an int or a (height, width) pair. ``activation`` is None
    or "relu" (fused into the store). ``isa`` is None for ``isa_default()``,
    or "best", "avx512", "avx2", "portable". ``threads``: 0 for the global
    pool, n for a private pool of n threads. ``precision``: None or "f32"
    (the default), or "bf16": a 1x1 convolution then rounds its weights and
    inputs to bfloat16 and sums in f32 (other geometries stay f32); it needs
    AVX512_BF16 with the avx512 kernels, or REPCONV_BF16=emulated (read once
    per process) for the slow software model, else PrecisionError.
    """

    def __init__(
        self,
        weight: npt.ArrayLike,
        bias: Optional[npt.ArrayLike] = None,
        stride: _IntOrPair = 1,
        padding: _IntOrPair = 0,
        dilation: _IntOrPair = 1,
        groups: int = 1,
        *,
        activation: Optional[str] = None,
        isa: Optional[str] = None,
        threads: int = 0,
        precision: _Precision = None,
    ) -> None: ...
    def with_precision(self, precision: _Precision) -> "Conv2d":
        """A new convolution computing in ``precision`` (same weights, ISA and
        threads); raises PrecisionError where it cannot run."""
    def __call__(self, x: _F32Array, out: Optional[_F32Array] = None) -> _F32Array:
        """Runs the convolution on ``x`` (float32, C-contiguous, NCHW) into
        ``out`` (written in place and returned; shape ``output_shape(x.shape)``)
        or into a new array. Releases the GIL."""
    def output_shape(self, shape: Tuple[int, ...]) -> Tuple[int, int, int, int]:
        """The output shape (n, out_channels, oh, ow) for an input shape."""
    def _time_rust(self, x: _F32Array, out: _F32Array, calls: int) -> float: ...
    @property
    def kernel_name(self) -> str:
        """The kernel that runs, e.g. "conv1x1_8x48__avx512", or
        "conv1x1_bf16_8x48__avx512bf16" for a 1x1 convolution in bf16
        ("...__emulated" on the software model)."""
    @property
    def precision(self) -> str:
        """The precision asked for: "f32" or "bf16"."""
    @property
    def isa(self) -> str:
        """The kernel's instruction set: "avx512", "avx2" or "portable"."""
    @property
    def threads(self) -> int:
        """0: the global pool; n: a private pool of n threads (settable)."""
    @threads.setter
    def threads(self, n: int) -> None: ...
    @property
    def num_threads(self) -> int:
        """The number of threads a forward pass runs on."""
    @property
    def in_channels(self) -> int: ...
    @property
    def out_channels(self) -> int: ...
    @property
    def kernel_size(self) -> Tuple[int, int]: ...
    @property
    def stride(self) -> Tuple[int, int]: ...
    @property
    def padding(self) -> Tuple[int, int]: ...
    @property
    def dilation(self) -> Tuple[int, int]: ...
    @property
    def groups(self) -> int: ...
    @property
    def activation(self) -> Optional[str]:
        """None or "relu"."""

class MobileOne:
    """A MobileOne network (timm's S0..S4) in either form: multi-branch
    (train-time) or reparameterized (fused)."""

    @staticmethod
    def load(
        path: _Path,
        *,
        isa: Optional[str] = None,
        threads: int = 0,
        precision: _Precision = None,
    ) -> "MobileOne":
        """Loads a timm MobileOne checkpoint (safetensors; train-time, fused or
        mixed; F32, F16 or BF16). Variant and classes come from the tensors.
        ``precision="bf16"``: the 1x1 convolutions in bf16 (see Conv2d)."""
    @staticmethod
    def from_state_dict(
        state_dict: Mapping[str, Any],
        *,
        isa: Optional[str] = None,
        threads: int = 0,
        precision: _Precision = None,
    ) -> "MobileOne":
        """Builds the network from a state dict in timm's names (str to arrays
        or anything with ``__array__``), e.g.
        ``{k: v.numpy() for k, v in model.state_dict().items()}``."""
    def reparameterize(self) -> "MobileOne":
        """A new network in the fused form (same ISA, precision and thread
        setting)."""
    def with_precision(self, precision: _Precision) -> "MobileOne":
        """A new network computing in ``precision`` (same weights, form, ISA
        and threads): with "bf16" its 1x1 convolutions round weights and
        inputs to bfloat16 and sum in f32; the rest and the logits stay f32.
        Raises PrecisionError where bf16 cannot run."""
    def save(self, path: _Path, *, overwrite: bool = True) -> None:
        """Writes the network in its current form (safetensors, timm names,
        float32), atomically."""
    def __call__(self, x: _F32Array, out: Optional[_F32Array] = None) -> _F32Array:
        """Logits (n, num_classes) of the batch ``x`` (float32, C-contiguous,
        (n, in_channels, h, w)), into ``out`` (written in place and returned)
        or a new array. Releases the GIL."""
    def output_shape(self, shape: Tuple[int, ...]) -> Tuple[int, int]:
        """The logits shape (n, num_classes) for an input shape."""
    def benchmark(
        self,
        x: Optional[_F32Array] = None,
        *,
        batch: int = 1,
        size: int = 224,
        runs: int = 20,
        threads: Optional[int] = None,
        seed: int = 0,
        peak: bool = True,
    ) -> Dict[str, Any]:
        """The main job's table for this (multi-branch) network: multi-branch
        vs fused median latency and the agreement of their logits.

        Keys: variant, form, cpu, isa, precision, shape, batch, size,
        threads, runs, multi_ms, fused_ms, speedup, max_abs_diff,
        max_rel_diff, max_abs_logit, argmax_equal, multi_mflop, fused_mflop,
        multi_gflops, fused_gflops, peak_gflops (None when ``peak=False``).
        A bf16 network compares both forms in bf16."""
    def _time_rust(self, x: _F32Array, out: _F32Array, calls: int) -> float: ...
    @property
    def variant(self) -> str:
        """ "s0" .. "s4", or "custom"."""
    @property
    def form(self) -> str:
        """ "multi-branch", "fused" or "mixed"."""
    @property
    def num_classes(self) -> int: ...
    @property
    def in_channels(self) -> int: ...
    @property
    def isa(self) -> str:
        """The kernels' instruction set: "avx512", "avx2" or "portable"."""
    @property
    def precision(self) -> str:
        """The precision asked for: "f32" or "bf16"."""
    @property
    def threads(self) -> int:
        """0: the global pool; n: a private pool of n threads (settable)."""
    @threads.setter
    def threads(self, n: int) -> None: ...
    @property
    def num_threads(self) -> int:
        """The number of threads a forward pass runs on."""
