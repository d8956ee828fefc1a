//! The disk image format: what `cargo xtask build` writes and the kernel's bcachetest verifies.
//!
//! The image is [`NBLOCKS`] blocks of [`BSIZE`] bytes, no file system. Every block carries its
//! own block number, a generation and a CRC-32 of the rest, so any read can be checked: a block
//! read from the wrong place, torn, or stale fails [`verify`]. `cargo xtask build` makes every
//! block with generation 0; the kernel stamps a new generation when it writes a block.
//!
//! | bytes | field |
//! | --- | --- |
//! | 0..8 | [`BLOCK_MAGIC`] |
//! | 8..12 | block number, u32 little-endian |
//! | 12..16 | 0 |
//! | 16..24 | generation, u64 little-endian (0 as made) |
//! | 24..1020 | payload: a pseudo-random stream seeded by block number and generation |
//! | 1020..1024 | CRC-32 (IEEE) of bytes 0..1020, little-endian |

use thiserror::Error;

/// Bytes per block (xv6's BSIZE): two 512-byte sectors.
pub const BSIZE: usize = 1024;
/// Blocks in the image.
pub const NBLOCKS: u32 = 4096;
/// Bytes in the image.
pub const IMAGE_BYTES: u64 = NBLOCKS as u64 * BSIZE as u64;
/// The first 8 bytes of every block.
pub const BLOCK_MAGIC: [u8; 8] = *b"LSBLOCK1";

const BLOCKNO_AT: usize = 8;
const GEN_AT: usize = 16;
const PAYLOAD_AT: usize = 24;
const CRC_AT: usize = BSIZE - 4;

/// Why a block did not verify.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum BlockError {
    #[error("not a lockscope disk block (bad magic); rebuild the image with `cargo xtask build`")]
    BadMagic,
    #[error("holds block {found}, expected block {expected}")]
    WrongBlock { expected: u32, found: u32 },
    #[error("checksum mismatch (stored {stored:#010x}, computed {computed:#010x}): torn or corrupt data")]
    BadChecksum { stored: u32, computed: u32 },
}

/// Fills `block` as block `blockno` with generation `generation`.
pub fn stamp(block: &mut [u8; BSIZE], blockno: u32, generation: u64) {
    block[..BLOCKNO_AT].copy_from_slice(&BLOCK_MAGIC);
    block[BLOCKNO_AT..BLOCKNO_AT + 4].copy_from_slice(&blockno.to_le_bytes());
    block[BLOCKNO_AT + 4..GEN_AT].fill(0);
    block[GEN_AT..PAYLOAD_AT].copy_from_slice(&generation.to_le_bytes());
    let mut state = (u64::from(blockno) << 32) ^ generation.rotate_left(17) ^ 0x6c6f_636b_7363_6f70;
    for chunk in block[PAYLOAD_AT..CRC_AT].chunks_mut(8) {
        let v = splitmix64(&mut state).to_le_bytes();
        chunk.copy_from_slice(&v[..chunk.len()]);
    }
    let crc = crc32fast::hash(&block[..CRC_AT]);
    block[CRC_AT..].copy_from_slice(&crc.to_le_bytes());
}

/// Checks that `block` is an intact block `blockno`; returns its generation.
pub fn verify(block: &[u8; BSIZE], blockno: u32) -> Result<u64, BlockError> {
    if block[..BLOCKNO_AT] != BLOCK_MAGIC {
        return Err(BlockError::BadMagic);
    }
    let found = u32::from_le_bytes(block[BLOCKNO_AT..BLOCKNO_AT + 4].try_into().unwrap());
    if found != blockno {
        return Err(BlockError::WrongBlock {
            expected: blockno,
            found,
        });
    }
    let stored = u32::from_le_bytes(block[CRC_AT..].try_into().unwrap());
    let computed = crc32fast::hash(&block[..CRC_AT]);
    if stored != computed {
        return Err(BlockError::BadChecksum { stored, computed });
    }
    Ok(generation(block))
}

/// The generation field, unchecked.
pub fn generation(block: &[u8; BSIZE]) -> u64 {
    u64::from_le_bytes(block[GEN_AT..PAYLOAD_AT].try_into().unwrap())
}

// The payload generator. Any deterministic stream would do; this one is tiny and has no
// zero runs, so a block of zeros never looks like a valid payload.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamped_block_verifies_with_its_generation() {
        let mut b = [0u8; BSIZE];
        stamp(&mut b, 77, 0x0300_0000_0000_0005);
        assert_eq!(verify(&b, 77), Ok(0x0300_0000_0000_0005));
        assert_eq!(&b[..8], b"LSBLOCK1");
    }

    #[test]
    fn the_format_is_pinned() {
        // xtask writes images the kernel reads: a change here is a format change.
        let mut b = [0u8; BSIZE];
        stamp(&mut b, 5, 0);
        let stored = u32::from_le_bytes(b[CRC_AT..].try_into().unwrap());
        assert_eq!(stored, 0x3f29_f5cd, "block format changed");
        assert_eq!(
            &b[PAYLOAD_AT..PAYLOAD_AT + 4],
            &[79, 244, 137, 67],
            "block format changed"
        );
    }

    #[test]
    fn another_blocks_data_is_caught() {
        let mut b = [0u8; BSIZE];
        stamp(&mut b, 12, 0);
        assert_eq!(
            verify(&b, 13),
            Err(BlockError::WrongBlock {
                expected: 13,
                found: 12
            })
        );
    }

    #[test]
    fn any_flipped_bit_is_caught() {
        let mut b = [0u8; BSIZE];
        stamp(&mut b, 3, 9);
        for byte in [16, 24, 500, BSIZE - 5, BSIZE - 1] {
            let mut c = b;
            c[byte] ^= 0x10;
            assert!(
                matches!(verify(&c, 3), Err(BlockError::BadChecksum { .. })),
                "flip at {byte}"
            );
        }
        assert_eq!(verify(&[0u8; BSIZE], 3), Err(BlockError::BadMagic));
    }

    #[test]
    fn payloads_differ_between_blocks_and_generations() {
        let (mut a, mut b, mut c) = ([0u8; BSIZE], [0u8; BSIZE], [0u8; BSIZE]);
        stamp(&mut a, 1, 0);
        stamp(&mut b, 2, 0);
        stamp(&mut c, 1, 1);
        assert_ne!(a[PAYLOAD_AT..CRC_AT], b[PAYLOAD_AT..CRC_AT]);
        assert_ne!(a[PAYLOAD_AT..CRC_AT], c[PAYLOAD_AT..CRC_AT]);
    }
}
