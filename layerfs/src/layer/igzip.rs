//! Raw deflate of one block with Intel's ISA-L (igzip), the fastest deflate there is on x86-64.
//!
//! A layer commit is bound by deflate. At level 1, ISA-L compresses the Debian minbase tar
//! about twice as fast as zlib-rs's `deflate_quick` and to a smaller blob (67 MB against
//! 79.6 MB; bench/RESULTS.md, layers), so the default gzip level goes through it; the other
//! levels stay on flate2/zlib-rs, which ISA-L does not match in ratio. `isal-sys` builds the
//! library from its vendored sources (autotools and nasm at build time) and links it
//! statically: the strata binary does not depend on a shared libisal.
//!
//! This is the only place that calls into ISA-L; the rest of the crate sees [`BlockDeflater`]
//! and [`crc32`].

use std::io;

use isal_sys::igzip_lib as isal;

/// A reusable ISA-L level-1 deflate stream. One per worker thread: the stream state is large
/// (ISA-L keeps its history window and hash table inside it) and is reset for every block.
pub(crate) struct BlockDeflater {
    /// Boxed: ISA-L's state must not move once it is initialised, and it is large (it holds the
    /// history window and the hash table).
    stream: Box<isal::isal_zstream>,
    /// ISA-L's level-1 working buffer, which `stream.level_buf` points into.
    level_buf: Vec<u8>,
}

// ISA-L's gzip CRC, in the same static library (isa-l's include/crc.h); isal-sys binds only
// igzip's functions.
unsafe extern "C" {
    fn crc32_gzip_refl(init_crc: u32, buf: *const u8, len: u64) -> u32;
}

/// Continues the gzip CRC-32 `crc` over `data` (start from 0). ISA-L folds with 512-bit
/// carry-less multiplies where the CPU has them: several times zlib-rs's speed.
pub(crate) fn crc32(crc: u32, data: &[u8]) -> u32 {
    // SAFETY: reads exactly `data.len()` bytes of `data`, which is live for the call.
    unsafe { crc32_gzip_refl(crc, data.as_ptr(), data.len() as u64) }
}

fn failure(what: &str, code: i32) -> io::Error {
    io::Error::other(format!("ISA-L {what} failed with code {code}"))
}

impl BlockDeflater {
    pub(crate) fn new() -> Self {
        let mut stream = Box::<isal::isal_zstream>::new_uninit();
        // SAFETY: `isal_deflate_init` writes every field of the stream it is given, and the
        // pointer is to a live, writable, properly aligned allocation of the right type.
        unsafe { isal::isal_deflate_init(stream.as_mut_ptr()) };
        // SAFETY: initialised just above.
        let stream = unsafe { stream.assume_init() };
        BlockDeflater {
            stream,
            // The medium buffer (148 KiB) was the fastest of ISA-L's sizes on the minbase
            // commit, and gives a smaller blob than the larger default.
            level_buf: vec![0; isal::ISAL_DEF_LVL1_MEDIUM as usize],
        }
    }

    /// Appends `data` to `out` as raw deflate, as if `dict` (at most 32 KiB) had come just
    /// before it. Unless `last`, the output ends with a sync flush (byte-aligned, stream left
    /// open) so that blocks concatenate; the `last` block ends the deflate stream.
    pub(crate) fn deflate(
        &mut self,
        dict: &[u8],
        data: &[u8],
        last: bool,
        out: &mut Vec<u8>,
    ) -> io::Result<()> {
        let stream = &mut *self.stream;
        // SAFETY: the stream was initialised by `isal_deflate_init`; resetting keeps it valid.
        unsafe { isal::isal_deflate_reset(stream) };
        stream.level = 1;
        stream.level_buf = self.level_buf.as_mut_ptr();
        stream.level_buf_size = self.level_buf.len() as u32;
        stream.gzip_flag = isal::IGZIP_DEFLATE as u16;
        stream.hist_bits = 0; // the full 32 KiB window
        if !dict.is_empty() {
            // SAFETY: the stream is freshly reset (ISA-L takes a dictionary only then); ISA-L
            // copies the dictionary and never writes through the pointer despite its `*mut`.
            let rc = unsafe {
                isal::isal_deflate_set_dict(stream, dict.as_ptr().cast_mut(), dict.len() as u32)
            };
            if rc != isal::COMP_OK as i32 {
                return Err(failure("set_dict", rc));
            }
        }
        stream.next_in = data.as_ptr().cast_mut();
        stream.avail_in = u32::try_from(data.len()).map_err(io::Error::other)?;
        stream.end_of_stream = u16::from(last);
        stream.flush = if last {
            isal::NO_FLUSH
        } else {
            isal::SYNC_FLUSH
        } as u16;
        // Incompressible input grows by a few bytes per stored block; start with room for that.
        out.reserve(data.len() + data.len() / 64 + 1024);
        loop {
            let room = out.capacity() - out.len();
            // SAFETY: `out` has `room` bytes of spare capacity from its length on.
            stream.next_out = unsafe { out.as_mut_ptr().add(out.len()) };
            stream.avail_out = u32::try_from(room).unwrap_or(u32::MAX);
            let before = stream.avail_out;
            // SAFETY: next_in/avail_in describe `data`, which outlives the call; next_out/
            // avail_out describe spare capacity of `out`; level_buf points into `self`.
            let rc = unsafe { isal::isal_deflate(stream) };
            if rc != isal::COMP_OK as i32 {
                return Err(failure("deflate", rc));
            }
            let written = (before - stream.avail_out) as usize;
            // SAFETY: ISA-L initialised `written` bytes after the old length.
            unsafe { out.set_len(out.len() + written) };
            let finished = stream.avail_in == 0
                && if last {
                    stream.internal_state.state == isal::isal_zstate_state_ZSTATE_END
                } else {
                    // A sync flush is complete when ISA-L stopped with room to spare.
                    stream.avail_out > 0
                };
            if finished {
                // The pointers into `data` and `out` must not outlive this call.
                stream.next_in = std::ptr::null_mut();
                stream.next_out = std::ptr::null_mut();
                return Ok(());
            }
            out.reserve(64 * 1024);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    fn inflate(raw: &[u8]) -> Vec<u8> {
        let mut back = Vec::new();
        flate2::read::DeflateDecoder::new(raw)
            .read_to_end(&mut back)
            .unwrap();
        back
    }

    #[test]
    fn blocks_with_dictionaries_concatenate_into_one_deflate_stream() {
        let text: Vec<u8> = (0..300_000u32)
            .flat_map(|i| format!("entry {i} mode {:o}\n", i % 4096).into_bytes())
            .collect();
        let random: Vec<u8> = (0..200_000u64)
            .map(|i| {
                (i.wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407)
                    >> 56) as u8
            })
            .collect();
        for data in [&text[..], &random[..], &[][..], &b"x"[..]] {
            let mut d = BlockDeflater::new();
            let mut out = Vec::new();
            let cut = data.len() / 3;
            d.deflate(&[], &data[..cut], false, &mut out).unwrap();
            let dict = &data[cut.saturating_sub(32 * 1024)..cut];
            d.deflate(dict, &data[cut..], true, &mut out).unwrap();
            assert_eq!(inflate(&out), data);
        }
    }

    #[test]
    fn the_same_block_deflates_to_the_same_bytes() {
        let data: Vec<u8> = (0..1_000_000u32).map(|i| (i * 7 % 253) as u8).collect();
        let mut d = BlockDeflater::new();
        let (mut a, mut b) = (Vec::new(), Vec::new());
        d.deflate(&data[..1000], &data, false, &mut a).unwrap();
        d.deflate(&data[..1000], &data, false, &mut b).unwrap();
        assert_eq!(a, b);
        assert_eq!(a, {
            let mut c = Vec::new();
            BlockDeflater::new()
                .deflate(&data[..1000], &data, false, &mut c)
                .unwrap();
            c
        });
    }
}
