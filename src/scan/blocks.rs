//! 64-octet block checks for the DATA scanner's fast paths: bit masks of
//! CR, LF and `.`, and the cheaper "is this block clean" test.
//!
//! Why it exists: most body lines need no work at all (no stuffed dot),
//! but the scanner must still see every line end to check bare CR/LF and
//! line lengths. Jumping from line end to line end with `memchr2` costs a
//! call per line (~76 octets) and reached about a quarter of the raw
//! `memmem` floor; three masks per block about a third. The clean test
//! compares each octet with the one after it in whole vectors, so a block
//! with nothing to do costs four compares and one branch.
//!
//! Each function exists for SSE2 (x86_64's baseline), AVX2 and AVX-512BW,
//! picked once per scanner by [`Simd::detect`], and as plain byte loops on
//! other architectures. `benches/scan.rs` and `benches/scan_pairs.rs` are
//! why these are hand-written intrinsics and not memchr calls.

/// Which vector width the block functions use on this CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Simd {
    /// SSE2 on x86_64 (its baseline), plain byte loops elsewhere.
    Baseline,
    /// 32-octet vectors.
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// 64-octet vectors compared straight into mask registers.
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

impl Simd {
    /// The widest level this CPU runs (a few cached feature-flag reads; a
    /// scanner is made per connection).
    pub fn detect() -> Simd {
        #[cfg(target_arch = "x86_64")]
        {
            let avx2 = std::arch::is_x86_feature_detected!("avx2");
            if avx2 && std::arch::is_x86_feature_detected!("avx512bw") {
                return Simd::Avx512;
            }
            if avx2 {
                return Simd::Avx2;
            }
        }
        Simd::Baseline
    }

    /// Every level this CPU runs, narrowest first (the tests and the
    /// fuzzer run them all).
    pub fn available() -> Vec<Simd> {
        let all = [
            Simd::Baseline,
            #[cfg(target_arch = "x86_64")]
            Simd::Avx2,
            #[cfg(target_arch = "x86_64")]
            Simd::Avx512,
        ];
        let widest = Simd::detect();
        let upto = all
            .iter()
            .position(|&s| s == widest)
            .expect("detected level is listed");
        all[..=upto].to_vec()
    }
}

/// The masks of one block: bit `k` is set when octet `k` is that byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Masks {
    pub cr: u64,
    pub lf: u64,
    pub dot: u64,
}

/// Masks for the 64 octets of `block`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub fn masks(block: &[u8; 64]) -> Masks {
    // SAFETY: SSE2 is part of the x86_64 baseline, so it is always there.
    unsafe { masks_sse2(block) }
}

/// One x86_64 mask function: `$lanes`-octet vectors, `64 / $lanes` loads
/// per block, each compared with CR, LF and `.` and turned into bits.
macro_rules! x86_masks {
    ($(#[$doc:meta])* $name:ident, $feature:literal, $lanes:literal, $bits:ty,
     $vec:ident, $load:ident, $set1:ident, $cmpeq:ident, $movemask:ident) => {
        $(#[$doc])*
        ///
        /// # Safety
        ///
        #[doc = concat!("The CPU must support ", $feature, ".")]
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $feature)]
        #[inline]
        pub unsafe fn $name(block: &[u8; 64]) -> Masks {
            use std::arch::x86_64::{$vec, $cmpeq, $load, $movemask, $set1};
            let (cr_v, lf_v, dot_v) = ($set1(b'\r' as i8), $set1(b'\n' as i8), $set1(b'.' as i8));
            let mut m = Masks { cr: 0, lf: 0, dot: 0 };
            for k in 0..64 / $lanes {
                // SAFETY: `block` is 64 octets and `(k + 1) * $lanes <= 64`,
                // so the unaligned load stays inside it.
                let v = unsafe { $load(block.as_ptr().add(k * $lanes).cast::<$vec>()) };
                let bits = |needle| u64::from($movemask($cmpeq(v, needle)) as $bits) << ($lanes * k);
                m.cr |= bits(cr_v);
                m.lf |= bits(lf_v);
                m.dot |= bits(dot_v);
            }
            m
        }
    };
}

x86_masks!(
    /// Masks with SSE2: four 16-octet compares per byte.
    masks_sse2, "sse2", 16, u16,
    __m128i, _mm_loadu_si128, _mm_set1_epi8, _mm_cmpeq_epi8, _mm_movemask_epi8
);
x86_masks!(
    /// Masks with AVX2: two 32-octet compares per byte.
    masks_avx2, "avx2", 32, u32,
    __m256i, _mm256_loadu_si256, _mm256_set1_epi8, _mm256_cmpeq_epi8, _mm256_movemask_epi8
);

/// Moves `blocks` (1, 2 or 4) 64-octet blocks at `base + at` down by
/// `gap`, reading them all before writing any, in vectors of the width
/// the checks use: inlined after a check of the same blocks, the compiler
/// then stores the registers the check loaded instead of loading them
/// again (with `copy_within` it did, and a body with a stuffed dot at its
/// start scanned at two thirds of the speed of one without).
///
/// # Safety
///
/// `gap <= at`, and `base` points to a buffer of at least
/// `at + 64 * blocks` octets.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub unsafe fn move_down(base: *mut u8, at: usize, gap: usize, blocks: usize) {
    // SAFETY: SSE2 is part of the x86_64 baseline; the rest is the caller's.
    unsafe { move_down_sse2(base, at, gap, blocks) }
}

/// One x86_64 block move: each block's `$lanes`-octet vectors are all
/// loaded before any is stored.
macro_rules! x86_move_down {
    ($(#[$doc:meta])* $name:ident, $feature:literal, $lanes:literal,
     $vec:ident, $load:ident, $store:ident) => {
        $(#[$doc])*
        ///
        /// # Safety
        ///
        #[doc = concat!("The CPU must support ", $feature, ", and as for [`move_down`].")]
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $feature)]
        #[inline]
        pub unsafe fn $name(base: *mut u8, at: usize, gap: usize, blocks: usize) {
            use std::arch::x86_64::{$load, $store, $vec};
            debug_assert!([1, 2, 4].contains(&blocks) && gap <= at);
            let load = |from: usize| -> [$vec; 64 / $lanes] {
                std::array::from_fn(|k| {
                    // SAFETY: the caller keeps `at..at + 64 * blocks`
                    // inside the buffer at `base`; `from` is one of those
                    // blocks.
                    unsafe { $load(base.add(from + k * $lanes).cast()) }
                })
            };
            let store = |to: usize, block: [$vec; 64 / $lanes]| {
                for (k, v) in block.into_iter().enumerate() {
                    // SAFETY: with `gap <= at`, the block's new place
                    // `to = at - gap + ..` is inside the buffer too.
                    unsafe { $store(base.add(to + k * $lanes).cast(), v) };
                }
            };
            match blocks {
                4 => {
                    let held = [load(at), load(at + 64), load(at + 128), load(at + 192)];
                    for (k, block) in held.into_iter().enumerate() {
                        store(at - gap + 64 * k, block);
                    }
                }
                2 => {
                    let held = [load(at), load(at + 64)];
                    for (k, block) in held.into_iter().enumerate() {
                        store(at - gap + 64 * k, block);
                    }
                }
                _ => store(at - gap, load(at)),
            }
        }
    };
}

x86_move_down!(
    /// [`move_down`] with SSE2.
    move_down_sse2, "sse2", 16, __m128i, _mm_loadu_si128, _mm_storeu_si128
);
x86_move_down!(
    /// [`move_down`] with AVX2.
    move_down_avx2, "avx2", 32, __m256i, _mm256_loadu_si256, _mm256_storeu_si256
);
x86_move_down!(
    /// [`move_down`] with AVX-512.
    move_down_avx512, "avx512bw", 64, __m512i, _mm512_loadu_si512, _mm512_storeu_si512
);

/// [`move_down`] on other architectures.
///
/// # Safety
///
/// As for the x86_64 [`move_down`].
#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
pub unsafe fn move_down(base: *mut u8, at: usize, gap: usize, blocks: usize) {
    debug_assert!(gap <= at);
    // SAFETY: both ranges lie inside the buffer (the caller's bounds); they
    // may overlap, which `copy` allows.
    unsafe { std::ptr::copy(base.add(at), base.add(at - gap), 64 * blocks) };
}

/// What a clean-block check says about one block (see [`clean`]).
#[derive(Debug, Clone, Copy)]
pub struct Clean {
    /// Zero exactly when the block is clean.
    pub trouble: u64,
    /// For a clean block: non-zero exactly when it holds a LF.
    pub lf: u64,
}

/// One x86_64 clean-block check: `$lanes`-octet vectors of the window and
/// of the window moved on by one octet, so that each octet is compared
/// with its successor without any mask arithmetic.
macro_rules! x86_clean {
    ($(#[$doc:meta])* $name:ident, $feature:literal, $lanes:literal, $bits:ty,
     $vec:ident, $load:ident, $set1:ident, $cmpeq:ident, $movemask:ident,
     $and:ident, $or:ident, $xor:ident, $setzero:ident) => {
        $(#[$doc])*
        ///
        /// # Safety
        ///
        #[doc = concat!("The CPU must support ", $feature, ".")]
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $feature)]
        #[inline]
        pub unsafe fn $name(window: &[u8; 65]) -> Clean {
            use std::arch::x86_64::{$and, $cmpeq, $load, $movemask, $or, $set1, $setzero, $vec, $xor};
            let (cr_v, lf_v, dot_v) = ($set1(b'\r' as i8), $set1(b'\n' as i8), $set1(b'.' as i8));
            let mut events = $setzero();
            let mut lfs = $setzero();
            for k in 0..64 / $lanes {
                // SAFETY: `window` is 65 octets and `(k + 1) * $lanes + 1 <= 65`,
                // so both unaligned loads stay inside it.
                let (here, next) = unsafe {
                    let at = window.as_ptr().add(k * $lanes);
                    ($load(at.cast::<$vec>()), $load(at.add(1).cast::<$vec>()))
                };
                let lf = $cmpeq(here, lf_v);
                // A CR without a LF after it, or a LF without a CR before it.
                let unpaired = $xor($cmpeq(here, cr_v), $cmpeq(next, lf_v));
                let dot_line = $and(lf, $cmpeq(next, dot_v));
                events = $or(events, $or(unpaired, dot_line));
                lfs = $or(lfs, lf);
            }
            Clean {
                trouble: u64::from($movemask(events) as $bits),
                lf: u64::from($movemask(lfs) as $bits),
            }
        }
    };
}

x86_clean!(
    /// [`clean`] with SSE2.
    clean_sse2, "sse2", 16, u16,
    __m128i, _mm_loadu_si128, _mm_set1_epi8, _mm_cmpeq_epi8, _mm_movemask_epi8,
    _mm_and_si128, _mm_or_si128, _mm_xor_si128, _mm_setzero_si128
);
x86_clean!(
    /// [`clean`] with AVX2.
    clean_avx2, "avx2", 32, u32,
    __m256i, _mm256_loadu_si256, _mm256_set1_epi8, _mm256_cmpeq_epi8, _mm256_movemask_epi8,
    _mm256_and_si256, _mm256_or_si256, _mm256_xor_si256, _mm256_setzero_si256
);

/// Masks with AVX-512BW: one 64-octet compare per byte, straight into a
/// mask register.
///
/// # Safety
///
/// The CPU must support AVX-512BW.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512bw")]
#[inline]
pub unsafe fn masks_avx512(block: &[u8; 64]) -> Masks {
    use std::arch::x86_64::{_mm512_cmpeq_epi8_mask, _mm512_loadu_si512, _mm512_set1_epi8};
    // SAFETY: `block` is 64 octets, one unaligned load.
    let v = unsafe { _mm512_loadu_si512(block.as_ptr().cast()) };
    let bits = |byte: u8| _mm512_cmpeq_epi8_mask(v, _mm512_set1_epi8(byte as i8));
    Masks {
        cr: bits(b'\r'),
        lf: bits(b'\n'),
        dot: bits(b'.'),
    }
}

/// [`clean`] with AVX-512BW.
///
/// # Safety
///
/// The CPU must support AVX-512BW.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512bw")]
#[inline]
pub unsafe fn clean_avx512(window: &[u8; 65]) -> Clean {
    use std::arch::x86_64::{_mm512_cmpeq_epi8_mask, _mm512_loadu_si512, _mm512_set1_epi8};
    // SAFETY: `window` is 65 octets; the loads cover 0..64 and 1..65.
    let (here, next) = unsafe {
        (
            _mm512_loadu_si512(window.as_ptr().cast()),
            _mm512_loadu_si512(window.as_ptr().add(1).cast()),
        )
    };
    let bits = |v, byte: u8| _mm512_cmpeq_epi8_mask(v, _mm512_set1_epi8(byte as i8));
    let lf = bits(here, b'\n');
    let events = (bits(here, b'\r') ^ bits(next, b'\n')) | (lf & bits(next, b'.'));
    Clean {
        trouble: events,
        lf,
    }
}

/// Checks the block `window[..64]` for anything that needs a closer look,
/// using `window[64]` as the successor of its last octet: a CR not
/// followed by LF, a LF (at 1..=64) not preceded by CR, or a `.` (at
/// 1..=64) right after a LF. For a clean block it also says whether the
/// block holds a LF (each of which ends a line, unless the one at 0 has
/// no CR before it: the caller checks that).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub fn clean(window: &[u8; 65]) -> Clean {
    // SAFETY: SSE2 is part of the x86_64 baseline, so it is always there.
    unsafe { clean_sse2(window) }
}

/// [`clean`] from the block's masks (portable fallback).
#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
pub fn clean(window: &[u8; 65]) -> Clean {
    let m = masks(window[..64].try_into().expect("64 octets"));
    let t = troubles(window, m);
    Clean {
        trouble: t.unpaired | t.dot_lines,
        lf: m.lf,
    }
}

/// The masks of `buf[at..end]`, a part-block of fewer than 64 octets
/// (a message's last ones), in the low bits: taken with `masks` from the
/// whole block that ends at `end` when the buffer has one (the octets
/// before `at` are shifted out), else from a zero-padded copy.
#[inline(always)]
pub fn part_masks(buf: &[u8], at: usize, end: usize, masks: &impl Fn(&[u8; 64]) -> Masks) -> Masks {
    let n = end - at;
    debug_assert!(0 < n && n < 64);
    if end >= 64 {
        let m = masks(buf[end - 64..end].try_into().expect("64 octets"));
        let shift = 64 - n;
        Masks {
            cr: m.cr >> shift,
            lf: m.lf >> shift,
            dot: m.dot >> shift,
        }
    } else {
        let mut block = [0u8; 64];
        block[..n].copy_from_slice(&buf[at..end]);
        masks(&block)
    }
}

/// What the clean check looks for, bit `k` for octet `k` of the block.
#[derive(Debug, Clone, Copy)]
pub struct Troubles {
    /// A CR at `k` without a LF at `k + 1`, or a LF at `k + 1` without a
    /// CR at `k`.
    pub unpaired: u64,
    /// A LF at `k` and a `.` at `k + 1`: a line that starts with a dot.
    pub dot_lines: u64,
}

/// [`clean`] spelled out over the masks `m` of `window[..64]`, with
/// `window[64]` as the successor of the block's last octet: the exact
/// positions the vector checks only say yes or no about.
#[inline(always)]
pub fn troubles(window: &[u8; 65], m: Masks) -> Troubles {
    let next = |mask: u64, byte: u8| (mask >> 1) | (u64::from(window[64] == byte) << 63);
    Troubles {
        unpaired: m.cr ^ next(m.lf, b'\n'),
        dot_lines: m.lf & next(m.dot, b'.'),
    }
}

/// Masks for the 64 octets of `block` (portable fallback).
#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
pub fn masks(block: &[u8; 64]) -> Masks {
    let mut m = Masks {
        cr: 0,
        lf: 0,
        dot: 0,
    };
    for (k, &b) in block.iter().enumerate() {
        m.cr |= u64::from(b == b'\r') << k;
        m.lf |= u64::from(b == b'\n') << k;
        m.dot |= u64::from(b == b'.') << k;
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn avx2_masks_equal_sse2_masks() {
        if !std::arch::is_x86_feature_detected!("avx2") {
            return;
        }
        let block: [u8; 64] =
            std::array::from_fn(|k| [b'\r', b'\n', b'.', b'a'][(k * 7 + k / 5) % 4]);
        // SAFETY: AVX2 was detected above.
        assert_eq!(unsafe { masks_avx2(&block) }, masks(&block));
        if std::arch::is_x86_feature_detected!("avx512bw") {
            // SAFETY: AVX-512BW was detected just above.
            assert_eq!(unsafe { masks_avx512(&block) }, masks(&block));
        }
    }

    /// The definition of a clean block, spelled out over its masks.
    fn clean_by_masks(window: &[u8; 65]) -> Clean {
        let m = masks(window[..64].try_into().unwrap());
        let t = troubles(window, m);
        Clean {
            trouble: t.unpaired | t.dot_lines,
            lf: m.lf,
        }
    }

    /// Windows of CRLF text and of text without line ends, with one or
    /// two octets changed at every pair of positions, so that clean and
    /// not clean, with and without a LF, are all common.
    fn windows() -> impl Iterator<Item = [u8; 65]> {
        let text: [u8; 65] = std::array::from_fn(|k| match k % 13 {
            11 => b'\r',
            12 => b'\n',
            _ => b'a',
        });
        [text, [b'a'; 65]].into_iter().flat_map(|base| {
            (0..65).flat_map(move |a| {
                (0..65).flat_map(move |b| {
                    [b'\r', b'\n', b'.', b'a'].into_iter().map(move |byte| {
                        let mut w = base;
                        w[a] = byte;
                        w[b] = [b'.', b'\n', b'\r', b'a'][(a + b) % 4];
                        w
                    })
                })
            })
        })
    }

    #[test]
    fn clean_matches_its_definition() {
        let mut seen = std::collections::HashMap::new();
        for w in windows() {
            let has_lf = |c: Clean| (c.trouble == 0).then_some(c.lf != 0);
            let want = has_lf(clean_by_masks(&w));
            assert_eq!(has_lf(clean(&w)), want, "{:?}", String::from_utf8_lossy(&w));
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: AVX2 was detected just above.
                assert_eq!(has_lf(unsafe { clean_avx2(&w) }), want);
            }
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx512bw") {
                // SAFETY: AVX-512BW was detected just above.
                assert_eq!(has_lf(unsafe { clean_avx512(&w) }), want);
            }
            *seen.entry(want).or_insert(0) += 1;
        }
        for outcome in [None, Some(false), Some(true)] {
            assert!(seen.get(&outcome).copied().unwrap_or(0) > 100, "{seen:?}");
        }
    }

    #[test]
    fn masks_match_a_byte_loop_at_every_position() {
        for pos in 0..64 {
            for byte in [b'\r', b'\n', b'.', b'x'] {
                let mut block = [b'a'; 64];
                block[pos] = byte;
                let m = masks(&block);
                let bit = 1u64 << pos;
                assert_eq!(m.cr, if byte == b'\r' { bit } else { 0 });
                assert_eq!(m.lf, if byte == b'\n' { bit } else { 0 });
                assert_eq!(m.dot, if byte == b'.' { bit } else { 0 });
            }
        }
    }
}
