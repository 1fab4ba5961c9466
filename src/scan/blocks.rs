//! 64-octet bit masks of CR, LF and `.` for the DATA scanner's fast path.
//!
//! Why it exists: most body lines need no work at all (no stuffed dot),
//! but the scanner must still see every line end to check bare CR/LF and
//! line lengths. Jumping from line end to line end with `memchr2` costs a
//! call per line (~76 octets). Here one pass over 64 octets yields three
//! masks, and whole blocks without a dot at a line start are settled with
//! a few bit operations. The benchmark in `benches/scan.rs` is why this
//! uses SSE2 intrinsics (x86_64's baseline, so no run-time detection):
//! with memchr alone the scanner reached about a quarter of the raw
//! `memmem` floor.

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
