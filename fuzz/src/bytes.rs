//! Decoding fuzz input by hand: a reader over the input bytes that, once they run out,
//! continues with a generator seeded from them, so short inputs still give full cases and
//! every input decodes to exactly one case.

use crate::common::Rng;
use qkv::Shape;

/// A reader of fuzz input.
pub struct Bytes<'a> {
    data: &'a [u8],
    pos: usize,
    rng: Rng,
}

impl<'a> Bytes<'a> {
    /// Reads `data`, then a SplitMix64 stream seeded with its FNV-1a hash.
    pub fn new(data: &'a [u8]) -> Bytes<'a> {
        let mut h = 0xcbf2_9ce4_8422_2325u64;
        for &b in data {
            h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
        }
        Bytes {
            data,
            pos: 0,
            rng: Rng(h),
        }
    }

    /// The next byte of the input, or of the generator once the input is used up.
    pub fn u8(&mut self) -> u8 {
        match self.data.get(self.pos) {
            Some(&b) => {
                self.pos += 1;
                b
            }
            None => self.rng.u64() as u8,
        }
    }

    /// Little-endian `u16`.
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    /// Little-endian `u32`.
    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    /// Little-endian `u64`.
    pub fn u64(&mut self) -> u64 {
        (self.u32() as u64) | ((self.u32() as u64) << 32)
    }

    /// Uniform enough in `0..n` (`n ≥ 1`).
    pub fn below(&mut self, n: usize) -> usize {
        if n <= 256 {
            self.u8() as usize % n
        } else {
            (self.u32() as u64 % n as u64) as usize
        }
    }

    /// In `lo..=hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }

    /// True with probability about `num / 256`.
    pub fn chance(&mut self, num: u8) -> bool {
        self.u8() < num
    }

    /// One of `xs`.
    pub fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len())]
    }

    /// Whether every input byte has been used.
    pub fn exhausted(&self) -> bool {
        self.pos >= self.data.len()
    }

    /// A shape with each of its six sizes drawn by `size`, in field order.
    pub fn shape(&mut self, size: fn(&mut Bytes) -> usize) -> Shape {
        Shape {
            q_heads: size(self),
            kv_heads: size(self),
            q_len: size(self),
            kv_len: size(self),
            head_dim: size(self),
            v_dim: size(self),
        }
    }
}

/// `x` as a `usize`, or `usize::MAX` where it does not fit (32-bit targets): the fuzz
/// checks' huge sizes, the same on 64-bit targets as the literals they replace.
pub fn huge(x: u64) -> usize {
    usize::try_from(x).unwrap_or(usize::MAX)
}
