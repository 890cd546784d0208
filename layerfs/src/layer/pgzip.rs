//! Gzip on every core, with output that does not depend on how many there are.
//!
//! The stream is cut into 1 MiB blocks. Each block is deflated on its own (primed with the
//! previous block's last 32 KiB as dictionary, so the ratio stays close to a single stream)
//! and ended with a sync flush, which byte-aligns it, so the blocks concatenate into one
//! deflate stream inside one gzip member; the CRC-32s of the blocks (ISA-L's, on the workers)
//! are combined in order. This is how pigz works. Because the cut points are fixed, the bytes
//! are the same whether one thread or sixteen did the work. Level 1, the default, deflates with ISA-L (module `igzip`), the
//! other levels with flate2/zlib-rs. Both are deterministic for a given build of strata; ISA-L
//! picks its SSE/AVX2/AVX-512 code at run time, and its authors do not promise the same bytes
//! from each, so a layer's diff_id (of the tar) is the reproducible identity across machines.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use flate2::{Compress, Compression, FlushCompress};

use super::igzip::{self, BlockDeflater};

/// The size of a block; the last one may be shorter.
pub(crate) const BLOCK: usize = 1 << 20;
const DICT: usize = 32 * 1024;
/// gzip header: magic, deflate, no flags, no mtime, no extra flags, OS unknown (as Go writes).
const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];

/// A deflated block, and the CRC-32 and length of its input.
type BlockResult = io::Result<(Vec<u8>, u32, usize)>;

struct Job {
    dict: Vec<u8>,
    data: Vec<u8>,
    last: bool,
    reply: SyncSender<BlockResult>,
}

/// A gzip encoder that deflates blocks on worker threads.
pub struct ParallelGzEncoder<W: Write> {
    out: Option<W>,
    level: u32,
    buf: Vec<u8>,
    /// The last 32 KiB of the block before `buf`.
    dict: Vec<u8>,
    workers: Vec<(SyncSender<Job>, JoinHandle<()>)>,
    next_worker: usize,
    pending: VecDeque<Receiver<BlockResult>>,
    /// CRC-32 and length (mod 2^32) of the input so far, for the gzip trailer.
    crc: u32,
    amount: u32,
    header_written: bool,
}

impl<W: Write> std::fmt::Debug for ParallelGzEncoder<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParallelGzEncoder")
            .field("level", &self.level)
            .finish_non_exhaustive()
    }
}

/// Deflates a job's block: with ISA-L when the worker has it (level 1), else with zlib-rs.
fn deflate_block(job: &Job, level: u32, isal: Option<&mut BlockDeflater>) -> BlockResult {
    let crc = igzip::crc32(0, &job.data);
    if let Some(isal) = isal {
        let mut out = Vec::new();
        isal.deflate(&job.dict, &job.data, job.last, &mut out)?;
        return Ok((out, crc, job.data.len()));
    }
    let mut c = Compress::new(Compression::new(level), false);
    if !job.dict.is_empty() {
        c.set_dictionary(&job.dict).map_err(io::Error::other)?;
    }
    let mut out = Vec::with_capacity(job.data.len() / 2 + 1024);
    let flush = if job.last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    let mut input = &job.data[..];
    loop {
        if out.capacity() - out.len() < 64 * 1024 {
            out.reserve(256 * 1024);
        }
        let before = c.total_in();
        let status = c
            .compress_vec(input, &mut out, flush)
            .map_err(io::Error::other)?;
        input = &input[(c.total_in() - before) as usize..];
        let done = input.is_empty()
            && match flush {
                FlushCompress::Finish => status == flate2::Status::StreamEnd,
                // A sync flush is complete when the output was not cut short.
                _ => out.capacity() > out.len(),
            };
        if done {
            break;
        }
    }
    Ok((out, crc, job.data.len()))
}

/// The gzip CRC-32 polynomial, bit-reflected.
const CRC_POLY: u32 = 0xedb8_8320;

/// `a * b` modulo the CRC polynomial, both bit-reflected (bit 31 is x^0).
const fn mul_mod_poly(a: u32, mut b: u32) -> u32 {
    let mut product = 0;
    let mut bit = 1u32 << 31;
    while bit != 0 {
        if a & bit != 0 {
            product ^= b;
        }
        bit >>= 1;
        b = if b & 1 != 0 {
            (b >> 1) ^ CRC_POLY
        } else {
            b >> 1
        };
    }
    product
}

/// `x^(2^k)` modulo the polynomial, for k = 0..32.
const X_POW_2K: [u32; 32] = {
    let mut t = [0u32; 32];
    t[0] = 1 << 30; // x^1
    let mut k = 1;
    while k < 32 {
        t[k] = mul_mod_poly(t[k - 1], t[k - 1]);
        k += 1;
    }
    t
};

/// The CRC-32 of A followed by B, from the CRC-32s of A and B and the length of B: A's CRC
/// times `x^(8·len_b)`, plus B's (zlib's `crc32_combine`, in O(log len_b)).
fn crc32_combine(crc_a: u32, crc_b: u32, len_b: u64) -> u32 {
    let mut shift = 1u32 << 31; // x^0
    let (mut n, mut k) = (len_b, 3); // 8·len_b = len_b · 2^3
    while n != 0 {
        if n & 1 != 0 {
            shift = mul_mod_poly(X_POW_2K[k % 32], shift);
        }
        n >>= 1;
        k += 1;
    }
    mul_mod_poly(shift, crc_a) ^ crc_b
}

impl<W: Write> ParallelGzEncoder<W> {
    /// An encoder at `level` (1-9) with one worker per core.
    pub fn new(out: W, level: u32) -> Self {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        let workers = (0..n)
            .map(|_| {
                let (tx, rx) = sync_channel::<Job>(2);
                let handle = std::thread::spawn(move || {
                    let mut isal = (level == 1).then(BlockDeflater::new);
                    for job in rx {
                        let r = deflate_block(&job, level, isal.as_mut());
                        let _ = job.reply.send(r);
                    }
                });
                (tx, handle)
            })
            .collect();
        ParallelGzEncoder {
            out: Some(out),
            level,
            buf: Vec::new(),
            dict: Vec::new(),
            workers,
            next_worker: 0,
            pending: VecDeque::new(),
            crc: 0,
            amount: 0,
            header_written: false,
        }
    }

    fn out(&mut self) -> &mut W {
        self.out.as_mut().expect("used only until finish")
    }

    /// Writes `data`; a whole block that starts at a block boundary is handed to a worker as
    /// it is, without a copy.
    pub fn write_owned(&mut self, data: Vec<u8>) -> io::Result<()> {
        if self.buf.is_empty() && data.len() == BLOCK {
            self.buf = data;
            return self.dispatch(false);
        }
        self.write_all(&data)
    }

    /// Sends the buffered block to a worker; writes finished blocks while too many are out.
    fn dispatch(&mut self, last: bool) -> io::Result<()> {
        let data = std::mem::take(&mut self.buf);
        let dict = std::mem::take(&mut self.dict);
        self.dict = data[data.len().saturating_sub(DICT)..].to_vec();
        let (reply, rx) = sync_channel(1);
        let job = Job {
            dict,
            data,
            last,
            reply,
        };
        let w = self.next_worker;
        self.next_worker = (w + 1) % self.workers.len();
        self.workers[w]
            .0
            .send(job)
            .map_err(|_| io::Error::other("a gzip worker stopped"))?;
        self.pending.push_back(rx);
        while self.pending.len() > 2 * self.workers.len() {
            self.write_one()?;
        }
        Ok(())
    }

    /// Writes the oldest finished block.
    fn write_one(&mut self) -> io::Result<()> {
        let Some(rx) = self.pending.pop_front() else {
            return Ok(());
        };
        let (bytes, crc, len) = rx
            .recv()
            .map_err(|_| io::Error::other("a gzip worker stopped"))??;
        if !self.header_written {
            self.out().write_all(&HEADER)?;
            self.header_written = true;
        }
        self.crc = crc32_combine(self.crc, crc, len as u64);
        self.amount = self.amount.wrapping_add(len as u32);
        self.out().write_all(&bytes)
    }

    /// Compresses what is left, writes the trailer and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.dispatch(true)?;
        while !self.pending.is_empty() {
            self.write_one()?;
        }
        let (sum, amount) = (self.crc, self.amount);
        let out = self.out();
        out.write_all(&sum.to_le_bytes())?;
        out.write_all(&amount.to_le_bytes())?;
        Ok(self.out.take().expect("finished once"))
    }
}

impl<W: Write> Write for ParallelGzEncoder<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.reserve_exact(BLOCK - self.buf.len());
        let n = data.len().min(BLOCK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == BLOCK {
            self.dispatch(false)?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<W: Write> Drop for ParallelGzEncoder<W> {
    fn drop(&mut self) {
        // Closing the job channels ends the workers.
        for (tx, handle) in std::mem::take(&mut self.workers) {
            drop(tx);
            let _ = handle.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    fn gz(data: &[u8], level: u32) -> Vec<u8> {
        let mut e = ParallelGzEncoder::new(Vec::new(), level);
        // Odd write sizes, across block boundaries.
        for chunk in data.chunks(77_777) {
            e.write_all(chunk).unwrap();
        }
        e.finish().unwrap()
    }

    #[test]
    fn output_is_valid_gzip_of_the_input() {
        let mut data = Vec::new();
        for i in 0..400_000u32 {
            data.extend_from_slice(format!("line {i} {}\n", i % 97).as_bytes());
        }
        for len in [0, 1, BLOCK - 1, BLOCK, BLOCK + 1, data.len()] {
            let out = gz(&data[..len], 1);
            let mut back = Vec::new();
            flate2::read::GzDecoder::new(&out[..])
                .read_to_end(&mut back)
                .unwrap();
            assert_eq!(back, &data[..len], "len {len}");
            // One member: a strict single-member reader sees everything.
            let mut d = flate2::read::GzDecoder::new(&out[..]);
            let mut all = Vec::new();
            d.read_to_end(&mut all).unwrap();
            assert_eq!(all.len(), len);
        }
    }

    #[test]
    fn combined_crcs_are_the_crc_of_the_whole() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 31 % 251) as u8).collect();
        for cut in [0, 1, 4096, 100_000, data.len()] {
            let (a, b) = data.split_at(cut);
            let mut whole = flate2::Crc::new();
            whole.update(&data);
            let combined = crc32_combine(igzip::crc32(0, a), igzip::crc32(0, b), b.len() as u64);
            assert_eq!(combined, whole.sum(), "cut at {cut}");
        }
        assert_eq!(igzip::crc32(0, b"123456789"), 0xcbf4_3926);
    }

    #[test]
    fn output_does_not_depend_on_write_pattern() {
        let data: Vec<u8> = (0..3 * BLOCK + 12345)
            .map(|i| (i * 31 % 251) as u8)
            .collect();
        let a = gz(&data, 6);
        let mut e = ParallelGzEncoder::new(Vec::new(), 6);
        e.write_all(&data).unwrap();
        assert_eq!(a, e.finish().unwrap());
    }
}
