//! Internet checksum arithmetic (RFC 1071) and incremental updates (RFC 1624, eqn. 3:
//! HC' = ~(~HC + ~m + m')). All values are the 16-bit words as they sit in the packet,
//! read as big-endian numbers.

/// Folds a 32-bit one's-complement accumulator into 16 bits.
#[inline(always)]
pub const fn fold(mut sum: u32) -> u16 {
    // verifier: two fixed folds instead of a loop; enough for any sum of < 2^16 words.
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// Checksum after one 16-bit word of the covered data changed from `old` to `new`.
#[inline(always)]
pub const fn replace_u16(check: u16, old: u16, new: u16) -> u16 {
    !fold((!check) as u32 + (!old) as u32 + new as u32)
}

/// Checksum after one 32-bit field (an address) changed from `old` to `new`.
#[inline(always)]
pub const fn replace_u32(check: u16, old: u32, new: u32) -> u16 {
    let sum = (!check) as u32
        + (!(old >> 16) as u16) as u32
        + (!(old as u16)) as u32
        + (new >> 16)
        + (new & 0xffff);
    !fold(sum)
}

/// UDP variant: a zero checksum means "none" and stays zero (RFC 768); a computed zero is sent
/// as 0xffff.
#[inline(always)]
pub const fn udp_replace_u32(check: u16, old: u32, new: u32) -> u16 {
    if check == 0 {
        return 0;
    }
    nonzero(replace_u32(check, old, new))
}

#[inline(always)]
pub const fn udp_replace_u16(check: u16, old: u16, new: u16) -> u16 {
    if check == 0 {
        return 0;
    }
    nonzero(replace_u16(check, old, new))
}

#[inline(always)]
const fn nonzero(check: u16) -> u16 {
    if check == 0 { 0xffff } else { check }
}

/// One's-complement sum (unfolded) of a fixed-size header, for the data path: the loop has a
/// constant bound.
#[inline(always)]
pub fn sum_bytes_fixed<const N: usize>(data: &[u8; N]) -> u32 {
    let mut sum = 0u32;
    let mut i = 0;
    // verifier: N / 2 iterations, N a constant.
    while i + 1 < N {
        sum += u16::from_be_bytes([data[i], data[i + 1]]) as u32;
        i += 2;
    }
    sum
}

/// Full one's-complement sum of `data` plus `initial`; for host-side checks and the
/// control plane, never the data path (unbounded loop).
pub fn sum_bytes(data: &[u8], initial: u32) -> u32 {
    let mut sum = initial as u64;
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u16::from_be_bytes([c[0], c[1]]) as u64;
    }
    if let [last] = chunks.remainder() {
        sum += (*last as u64) << 8;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u32
}

/// Full checksum of `data` (header with its checksum field zeroed, or verified when not).
pub fn checksum(data: &[u8]) -> u16 {
    !fold(sum_bytes(data, 0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::vec::Vec;

    fn set_word(buf: &mut [u8], at: usize, v: u16) {
        buf[at..at + 2].copy_from_slice(&v.to_be_bytes());
    }

    proptest! {
        /// An incremental update equals recomputing from scratch, for any data and any word.
        #[test]
        fn replace_u16_matches_recompute(mut data in proptest::collection::vec(any::<u8>(), 4..64usize),
                                         idx in any::<prop::sample::Index>(), new in any::<u16>()) {
            if data.len() % 2 == 1 { data.pop(); }
            set_word(&mut data, 0, 0);
            let check = checksum(&data);
            set_word(&mut data, 0, check);
            let words = data.len() / 2;
            let w = 1 + idx.index(words - 1);
            let old = u16::from_be_bytes([data[2 * w], data[2 * w + 1]]);
            set_word(&mut data, 2 * w, new);
            let inc = replace_u16(check, old, new);
            set_word(&mut data, 0, 0);
            let full = checksum(&data);
            // One's complement has two zeros; both encode the same sum.
            prop_assert!(inc == full || (inc ^ full) == 0xffff && (inc == 0 || full == 0),
                "inc {inc:#06x} full {full:#06x}");
            // And the packet verifies with the incremental value.
            set_word(&mut data, 0, inc);
            prop_assert_eq!(fold(sum_bytes(&data, 0)), 0xffff);
        }

        #[test]
        fn replace_u32_matches_recompute(mut data in proptest::collection::vec(any::<u8>(), 8..64usize), new in any::<u32>()) {
            if data.len() % 2 == 1 { data.pop(); }
            set_word(&mut data, 0, 0);
            let check = checksum(&data);
            let old = u32::from_be_bytes([data[2], data[3], data[4], data[5]]);
            data[2..6].copy_from_slice(&new.to_be_bytes());
            let inc = replace_u32(check, old, new);
            set_word(&mut data, 0, inc);
            prop_assert_eq!(fold(sum_bytes(&data, 0)), 0xffff);
        }

        #[test]
        fn udp_zero_stays_zero(old in any::<u32>(), new in any::<u32>(), p in any::<u16>(), q in any::<u16>()) {
            prop_assert_eq!(udp_replace_u32(0, old, new), 0);
            prop_assert_eq!(udp_replace_u16(0, p, q), 0);
        }

        #[test]
        fn udp_never_produces_zero(check in 1u16.., old in any::<u32>(), new in any::<u32>()) {
            prop_assert_ne!(udp_replace_u32(check, old, new), 0);
        }
    }

    #[test]
    fn rfc1071_example() {
        let data: Vec<u8> = [0x00u8, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7].to_vec();
        assert_eq!(fold(sum_bytes(&data, 0)), 0xddf2);
    }
}
