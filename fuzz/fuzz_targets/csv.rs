#![no_main]
//! The strict CSV reader a table load goes through. The first byte picks the dialect:
//! delimiter and enclosure (any ASCII, as a manifest may set them; in one case the next two
//! bytes), a header or a given width, and how the file arrives (in reads of every size
//! from 1 byte up, as from a pipe or a gzip stream). The rest is the file.

use std::io::{self, Read};

use berth::storage::fuzz_csv;
use berth_fuzz::within_heap;
use libfuzzer_sys::fuzz_target;

/// Records are buffered whole, so the heap follows the input, plus fixed buffers.
const HEAP_LIMIT: usize = 16 << 20;

/// Hands the file over at most `chunk` bytes a read, as a pipe or gzip stream may.
struct Chunked {
    data: Vec<u8>,
    at: usize,
    chunk: usize,
}

impl Read for Chunked {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(self.chunk).min(self.data.len() - self.at);
        buf[..n].copy_from_slice(&self.data[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&dialect, rest)) = data.split_first() else {
        return;
    };
    let (delimiter, quote, file) = match (dialect & 0b11, rest) {
        (0, _) => (b',', b'"', rest),
        (1, _) => (b'\t', b'\'', rest),
        (2, _) => (b';', b';', rest),
        // Any other pair, from the next two bytes.
        (_, [d, q, file @ ..]) => (d & 0x7f, q & 0x7f, file),
        _ => return,
    };
    let width = (dialect & 0b100 != 0).then_some(usize::from(dialect >> 5) + 1);
    let chunk = if dialect & 0b1000 != 0 {
        1 + usize::from(dialect >> 4)
    } else {
        usize::MAX
    };
    let src = Box::new(Chunked {
        data: file.to_vec(),
        at: 0,
        chunk,
    });
    within_heap(HEAP_LIMIT, "csv", || {
        let _ = fuzz_csv(src, delimiter, quote, width).map_err(|e| e.to_string());
    });
});
