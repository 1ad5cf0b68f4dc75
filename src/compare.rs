//! NaN-aware comparison of two outputs (multi-branch vs fused, bf16 vs f32,
//! repconv vs PyTorch): the one set of helpers the CLI, the Python package
//! and the tests use.
//!
//! `a.iter().zip(b).fold(0.0, |m, (x, y)| m.max((x - y).abs()))` looks like a
//! max |difference| but is not one: `f64::max` returns the other operand when
//! one is NaN, so a NaN on one side is silently dropped, and `zip` ignores a
//! length mismatch. [`max_abs_diff`] counts both as an infinite difference.

/// The largest `|a[i] - b[i]|`, computed in f64, where NaN and infinities count:
///
/// - a NaN on one side only gives `f64::INFINITY`;
/// - a NaN on both sides at the same index is equal (difference 0), as are
///   infinities of the same sign;
/// - an infinity against a finite value or the opposite infinity gives
///   `f64::INFINITY`;
/// - slices of different lengths give `f64::INFINITY`.
///
/// Two empty slices give 0. The result is never NaN.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f64 {
    if a.len() != b.len() {
        return f64::INFINITY;
    }
    let mut worst = 0f64;
    for (&x, &y) in a.iter().zip(b) {
        let d = abs_diff(x, y);
        if d == f64::INFINITY {
            return d;
        }
        worst = worst.max(d);
    }
    worst
}

/// `|x - y|` in f64 with the rules of [`max_abs_diff`]; never NaN.
pub fn abs_diff(x: f32, y: f32) -> f64 {
    match (x.is_nan(), y.is_nan()) {
        (true, true) => 0.0,
        (true, false) | (false, true) => f64::INFINITY,
        // Also equal infinities, whose difference would be NaN.
        _ if x == y => 0.0,
        // Infinite when exactly one side is infinite, or they have opposite signs.
        _ => (f64::from(x) - f64::from(y)).abs(),
    }
}

/// The largest `|x|` over the finite values of `v` (0 if there are none): the
/// scale a difference is measured against, which a NaN or an infinity in the
/// output must not hide.
pub fn max_abs_finite(v: &[f32]) -> f64 {
    v.iter().filter(|x| x.is_finite()).fold(0f64, |m, x| m.max(f64::from(x.abs())))
}

/// `diff` relative to `scale` (`diff` itself when `scale` is 0); infinite
/// when `diff` is, never NaN for the values [`max_abs_diff`] and
/// [`max_abs_finite`] return.
pub fn relative(diff: f64, scale: f64) -> f64 {
    if scale > 0.0 { diff / scale } else { diff }
}

/// How far logits are from reference logits: [`max_abs_diff`], the scale
/// [`max_abs_finite`] of the reference, their [`relative`] ratio, and whether
/// every image's top class (the first largest logit) is the same.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Agreement {
    /// The largest |difference| (infinite for NaN on one side only).
    pub max_abs_diff: f64,
    /// The largest finite |reference logit|.
    pub max_abs_logit: f64,
    /// `max_abs_diff / max_abs_logit` (see [`relative`]).
    pub max_rel_diff: f64,
    /// Whether the top class of each image agrees.
    pub argmax_equal: bool,
}

/// [`Agreement`] of `other` with `reference`, both `[batch, classes]` logits
/// flattened (rows of `classes` values; `classes` 0 is treated as 1).
pub fn agreement(reference: &[f32], other: &[f32], classes: usize) -> Agreement {
    let max_abs_diff = max_abs_diff(reference, other);
    let max_abs_logit = max_abs_finite(reference);
    let classes = classes.max(1);
    let argmax_equal = reference.len() == other.len()
        && reference
            .chunks(classes)
            .zip(other.chunks(classes))
            .all(|(p, q)| argmax(p) == argmax(q));
    Agreement {
        max_abs_diff,
        max_abs_logit,
        max_rel_diff: relative(max_abs_diff, max_abs_logit),
        argmax_equal,
    }
}

/// The index of the first largest value; NaN is never the largest (0 for an
/// empty or all-NaN slice).
pub fn argmax(v: &[f32]) -> usize {
    let mut best: Option<usize> = None;
    for (i, x) in v.iter().enumerate() {
        if !x.is_nan() && best.is_none_or(|b| *x > v[b]) {
            best = Some(i);
        }
    }
    best.unwrap_or(0)
}

/// Checks `got` against `want` at `abs_tol` and at `rel_tol` of the largest
/// finite `|want|`; returns `(max |diff|, relative)`, or a message naming
/// both when either bound fails (a NaN on one side only or a length
/// mismatch always fails, and so does an all-zero `want`, against which
/// nothing is measured).
pub fn check_matches(
    got: &[f32],
    want: &[f32],
    abs_tol: f64,
    rel_tol: f64,
) -> Result<(f64, f64), String> {
    let (d, m) = (max_abs_diff(got, want), max_abs_finite(want));
    let rel = relative(d, m);
    if m == 0.0 {
        return Err("the reference output is all zero (or not finite)".into());
    }
    if d <= abs_tol && d <= rel_tol * m {
        Ok((d, rel))
    } else {
        Err(format!("max |diff| {d:.3e} (relative {rel:.3e}; bounds {abs_tol:.1e}, {rel_tol:.1e})"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fold the CLI used before: it drops NaN.
    fn old_fold(a: &[f32], b: &[f32]) -> f64 {
        // Deliberately the NaN-blind fold, to show what max_abs_diff fixes.
        a.iter().zip(b).fold(0f64, |m, (x, y)| m.max(f64::from((x - y).abs())))
    }

    const NAN: f32 = f32::NAN;
    const INF: f32 = f32::INFINITY;

    #[test]
    fn nan_on_one_side_is_an_infinite_difference() {
        for (a, b) in [
            (&[1.0, NAN, 3.0][..], &[1.0, 2.0, 3.0][..]),
            (&[1.0, 2.0, 3.0][..], &[1.0, 2.0, NAN][..]),
            (&[NAN][..], &[0.0][..]),
            (&[NAN, 0.5][..], &[INF, 0.5][..]),
        ] {
            assert_eq!(max_abs_diff(a, b), f64::INFINITY, "{a:?} vs {b:?}");
            assert_eq!(max_abs_diff(b, a), f64::INFINITY, "{b:?} vs {a:?}");
        }
        // What the old fold made of the first case: agreement.
        assert_eq!(old_fold(&[1.0, NAN, 3.0], &[1.0, 2.0, 3.0]), 0.0);
    }

    #[test]
    fn nan_on_both_sides_at_the_same_index_is_equal() {
        assert_eq!(max_abs_diff(&[NAN, 1.0], &[NAN, 1.0]), 0.0);
        assert_eq!(max_abs_diff(&[NAN, 1.0], &[-NAN, 1.5]), 0.5);
        // NaN at different indices: each side has a NaN the other lacks.
        assert_eq!(max_abs_diff(&[NAN, 1.0], &[1.0, NAN]), f64::INFINITY);
        assert_eq!(old_fold(&[NAN, 1.0], &[1.0, NAN]), 0.0);
    }

    #[test]
    fn infinities() {
        assert_eq!(max_abs_diff(&[INF, -INF, 2.0], &[INF, -INF, 2.25]), 0.25);
        assert_eq!(max_abs_diff(&[INF], &[-INF]), f64::INFINITY);
        assert_eq!(max_abs_diff(&[INF], &[f32::MAX]), f64::INFINITY);
        assert_eq!(max_abs_diff(&[1.0], &[-INF]), f64::INFINITY);
        // The old fold: inf - inf = NaN, dropped.
        assert_eq!(old_fold(&[INF, 1.0], &[INF, 1.0]), 0.0);
    }

    #[test]
    fn lengths_must_match() {
        assert_eq!(max_abs_diff(&[1.0, 2.0], &[1.0]), f64::INFINITY);
        assert_eq!(max_abs_diff(&[], &[0.0]), f64::INFINITY);
        assert_eq!(max_abs_diff(&[], &[]), 0.0);
        assert_eq!(old_fold(&[1.0, 2.0], &[1.0]), 0.0);
    }

    #[test]
    fn finite_values_are_exact_in_f64() {
        assert_eq!(max_abs_diff(&[1.0, -2.0, 0.0], &[1.5, 2.0, -0.0]), 4.0);
        // No f32 overflow: f32::MAX - (-f32::MAX) is finite in f64.
        assert_eq!(max_abs_diff(&[f32::MAX], &[-f32::MAX]), 2.0 * f64::from(f32::MAX));
    }

    #[test]
    fn scale_and_relative_ignore_non_finite_values() {
        assert_eq!(max_abs_finite(&[NAN, -3.0, INF, 2.0]), 3.0);
        assert_eq!(max_abs_finite(&[NAN, INF]), 0.0);
        assert_eq!(relative(1.5, 3.0), 0.5);
        assert_eq!(relative(1.5, 0.0), 1.5);
        assert_eq!(relative(f64::INFINITY, 3.0), f64::INFINITY);
        assert_eq!(relative(f64::INFINITY, 0.0), f64::INFINITY);
    }

    #[test]
    fn check_matches_sees_nan_and_both_bounds() {
        assert_eq!(check_matches(&[1.0, 2.0], &[1.0, 2.0], 0.0, 0.0), Ok((0.0, 0.0)));
        assert!(check_matches(&[1.0, 2.1], &[1.0, 2.0], 0.2, 0.01).is_err());
        assert!(check_matches(&[1.0, 2.1], &[1.0, 2.0], 0.05, 1.0).is_err());
        assert!(check_matches(&[1.0, 2.1], &[1.0, 2.0], 0.2, 0.1).is_ok());
        assert!(check_matches(&[NAN, 2.0], &[1.0, 2.0], 1.0, 1.0).is_err());
        assert!(check_matches(&[0.0, 0.0], &[0.0, 0.0], 1.0, 1.0).is_err());
    }

    #[test]
    fn agreement_of_logits() {
        let a = [1.0, 4.0, 2.0, -3.0, 0.5, 0.25];
        let same = agreement(&a, &a, 3);
        assert_eq!((same.max_abs_diff, same.max_abs_logit, same.argmax_equal), (0.0, 4.0, true));
        // Second image's top class moves from 1 to 2; the largest change is 0.5.
        let b = [1.0, 4.0, 2.0, -3.0, 0.5, 0.75];
        let moved = agreement(&a, &b, 3);
        assert_eq!(
            (moved.max_abs_diff, moved.max_rel_diff, moved.argmax_equal),
            (0.5, 0.125, false)
        );
        assert!(!agreement(&a, &a[..3], 3).argmax_equal);
        let nan = agreement(&a, &[1.0, 4.0, 2.0, -3.0, NAN, 0.25], 3);
        assert_eq!(nan.max_abs_diff, f64::INFINITY);
        assert_eq!(argmax(&[NAN, 1.0, 3.0, 3.0]), 2);
        assert_eq!((argmax(&[]), argmax(&[NAN, NAN]), argmax(&[-INF, -1.0])), (0, 0, 1));
    }
}
