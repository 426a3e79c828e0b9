//! Sparse files: holes are neither read nor stored, and come back as holes.
//!
//! On create, `SEEK_DATA`/`SEEK_HOLE` find the data segments of a file with
//! holes; the member is an old-GNU sparse entry (type `S`, which GNU tar and
//! the tar crate read) holding only those segments. The manifest's sha256 is
//! still that of the whole content, holes as zeros, so `verify` and `restore`
//! check it on what the tar crate expands. On restore, a sparse member's
//! all-zero blocks are skipped by seeking instead of written.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;

use rustix::fs::SeekFrom;
use rustix::io::Errno;
use sha2::{Digest, Sha256};

use super::format::hex;

/// Tar's block: sparse segments start and (but for the last) end on it.
const TAR_BLOCK: u64 = 512;
/// The unit of holes on restore: a filesystem block.
const HOLE_BLOCK: usize = 4096;

/// One run of data in a sparse file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Segment {
    pub offset: u64,
    pub len: u64,
}

/// The data segments of a file of `size` bytes, or `None` when it has no
/// hole (or its filesystem cannot tell): then it is stored as a plain file.
/// The file's offset is back at its start afterwards.
pub(super) fn data_segments(file: &File, size: u64) -> io::Result<Option<Vec<Segment>>> {
    let segments = find_segments(file, size);
    rustix::fs::seek(file, SeekFrom::Start(0))?;
    segments
}

fn find_segments(file: &File, size: u64) -> io::Result<Option<Vec<Segment>>> {
    if size == 0 {
        return Ok(None);
    }
    match rustix::fs::seek(file, SeekFrom::Hole(0)) {
        Ok(first_hole) if first_hole < size => {}
        _ => return Ok(None),
    }
    let mut segments: Vec<Segment> = Vec::new();
    let mut offset = 0;
    while offset < size {
        let start = match rustix::fs::seek(file, SeekFrom::Data(offset)) {
            Ok(start) if start < size => start,
            Ok(_) | Err(Errno::NXIO) => break,
            Err(err) => return Err(err.into()),
        };
        let end = match rustix::fs::seek(file, SeekFrom::Hole(start)) {
            Ok(end) => end.min(size),
            Err(Errno::NXIO) => size,
            Err(err) => return Err(err.into()),
        };
        if end <= start {
            break;
        }
        push_aligned(&mut segments, start, end, size);
        offset = end;
    }
    Ok(Some(segments))
}

/// Adds `start..end`, widened to tar blocks (but not past `size`), merged with the previous segment when they touch.
fn push_aligned(segments: &mut Vec<Segment>, start: u64, end: u64, size: u64) {
    let start = start - start % TAR_BLOCK;
    let end = end.div_ceil(TAR_BLOCK).saturating_mul(TAR_BLOCK).min(size);
    match segments.last_mut() {
        Some(last) if start <= last.offset + last.len => last.len = end.max(last.offset + last.len) - last.offset,
        _ => segments.push(Segment { offset: start, len: end - start }),
    }
}

/// Fills the old-GNU sparse fields of `header` (the first four segments, the
/// real size) and returns the extension blocks holding the other segments.
pub(super) fn describe(header: &mut tar::Header, segments: &[Segment], size: u64) -> Vec<u8> {
    let mut map = segments.to_vec();
    // The end of a file that ends in a hole, as GNU tar marks it.
    if map.last().is_none_or(|last| last.offset + last.len < size) {
        map.push(Segment { offset: size, len: 0 });
    }
    header.set_size(segments.iter().map(|s| s.len).sum());
    let Some(gnu) = header.as_gnu_mut() else { return Vec::new() };
    gnu.set_real_size(size);
    let (first, rest) = map.split_at(map.len().min(gnu.sparse.len()));
    for (slot, segment) in gnu.sparse.iter_mut().zip(first) {
        slot.set_offset(segment.offset);
        slot.set_length(segment.len);
    }
    gnu.set_is_extended(!rest.is_empty());
    let mut blocks = Vec::new();
    let chunks: Vec<&[Segment]> = rest.chunks(21).collect();
    for (index, chunk) in chunks.iter().enumerate() {
        let mut extension = tar::GnuExtSparseHeader::new();
        for (slot, segment) in extension.sparse.iter_mut().zip(chunk.iter()) {
            slot.set_offset(segment.offset);
            slot.set_length(segment.len);
        }
        extension.set_is_extended(index + 1 < chunks.len());
        blocks.extend_from_slice(extension.as_bytes());
    }
    blocks
}

/// What a sparse content is read from: a file, or a snapshot's file stored in pieces.
pub(super) trait ReadAt {
    /// Reads into `buf` from `offset`; `Ok(0)` only at the end.
    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
}

impl ReadAt for File {
    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        FileExt::read_at(self, buf, offset)
    }
}

/// Reads the data segments of a sparse file in order (what the archive
/// stores), while hashing the whole content, holes as zeros (what the
/// manifest records). A segment cut short by a shrinking file is padded with zeros.
pub(super) struct SparseReader<F: ReadAt = File> {
    file: F,
    segments: Vec<Segment>,
    size: u64,
    next: usize,
    /// Bytes of the current segment already read.
    done: u64,
    /// Where the content hashed so far ends.
    hashed_to: u64,
    hasher: Sha256,
    pub short: bool,
}

impl<F: ReadAt> SparseReader<F> {
    pub(super) fn new(file: F, segments: Vec<Segment>, size: u64) -> SparseReader<F> {
        SparseReader { file, segments, size, next: 0, done: 0, hashed_to: 0, hasher: Sha256::new(), short: false }
    }

    /// Where in the file the next read's bytes come from.
    pub(super) fn offset(&self) -> u64 {
        self.segments.get(self.next).map_or(self.size, |segment| segment.offset + self.done)
    }

    /// The sha256 of the whole content (call once everything was read).
    pub(super) fn hex(&mut self) -> String {
        self.hash_zeros_to(self.size);
        hex(&self.hasher.clone().finalize())
    }

    fn hash_zeros_to(&mut self, end: u64) {
        hash_zeros(&mut self.hasher, &mut self.hashed_to, end);
    }
}

/// Hashes zeros from `hashed_to` up to `end` (a hole), moving `hashed_to` there.
pub(super) fn hash_zeros(hasher: &mut Sha256, hashed_to: &mut u64, end: u64) {
    static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];
    while *hashed_to < end {
        let n = (end - *hashed_to).min(ZEROS.len() as u64) as usize;
        hasher.update(&ZEROS[..n]);
        *hashed_to += n as u64;
    }
}

impl<F: ReadAt> Read for SparseReader<F> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(segment) = self.segments.get(self.next).copied() else { return Ok(0) };
        if self.done == 0 {
            self.hash_zeros_to(segment.offset);
        }
        let left = segment.len - self.done;
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let mut n = self.file.read_at(&mut buf[..want], segment.offset + self.done)?;
        if n == 0 && want > 0 {
            self.short = true;
            buf[..want].fill(0);
            n = want;
        }
        self.hasher.update(&buf[..n]);
        self.done += n as u64;
        self.hashed_to = segment.offset + self.done;
        if self.done == segment.len {
            self.next += 1;
            self.done = 0;
        }
        Ok(n)
    }
}

/// Writes a sparse member's expanded content into `file`, seeking over
/// all-zero blocks so they stay holes; returns its sha256 and size.
pub(super) fn write_sparse(file: &File, data: &mut dyn Read) -> io::Result<(String, u64)> {
    let mut buffer = vec![0u8; 256 * HOLE_BLOCK];
    let mut hasher = Sha256::new();
    let mut offset = 0u64;
    loop {
        let filled = read_full(data, &mut buffer)?;
        if filled == 0 {
            break;
        }
        hasher.update(&buffer[..filled]);
        for block in buffer[..filled].chunks(HOLE_BLOCK) {
            if block.iter().any(|b| *b != 0) {
                file.write_all_at(block, offset)?;
            }
            offset += block.len() as u64;
        }
    }
    file.set_len(offset)?;
    Ok((hex(&hasher.finalize()), offset))
}

/// Reads until `buffer` is full or the input ends (one read may return less):
/// sparse blocks stay aligned, and a file's first bytes are all there to be told apart.
pub(super) fn read_full(data: &mut dyn Read, buffer: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match data.read(&mut buffer[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn sparse_file(dir: &std::path::Path) -> File {
        let file = File::options().read(true).write(true).create(true).truncate(true).open(dir.join("s")).unwrap();
        file.set_len(16 << 20).unwrap();
        file.write_all_at(b"head", 0).unwrap();
        file.write_all_at(&[7u8; 10_000], 4 << 20).unwrap();
        file.write_all_at(b"tail-but-not-the-end", 10 << 20).unwrap();
        file
    }

    #[test]
    fn segments_cover_the_data_and_skip_the_holes() {
        let dir = tempfile::tempdir().unwrap();
        let file = sparse_file(dir.path());
        let segments = data_segments(&file, 16 << 20).unwrap().expect("holes found");
        let stored: u64 = segments.iter().map(|s| s.len).sum();
        assert!(stored < 1 << 20, "{segments:?}");
        assert!(segments.iter().any(|s| s.offset <= 4 << 20 && s.offset + s.len >= (4 << 20) + 10_000));
        assert!(segments.iter().all(|s| s.offset % TAR_BLOCK == 0));
        let dense = File::create(dir.path().join("d")).unwrap();
        dense.write_all_at(&[1u8; 9000], 0).unwrap();
        assert_eq!(data_segments(&dense, 9000).unwrap(), None);
    }

    #[test]
    fn the_reader_hashes_the_whole_content_and_the_writer_keeps_holes() {
        let dir = tempfile::tempdir().unwrap();
        let file = sparse_file(dir.path());
        let size = 16 << 20;
        let segments = data_segments(&file, size).unwrap().unwrap();
        let mut reader = SparseReader::new(file.try_clone().unwrap(), segments.clone(), size);
        let mut stored = Vec::new();
        reader.read_to_end(&mut stored).unwrap();
        assert_eq!(stored.len() as u64, segments.iter().map(|s| s.len).sum::<u64>());
        let mut whole = Vec::new();
        File::open(dir.path().join("s")).unwrap().read_to_end(&mut whole).unwrap();
        assert_eq!(reader.hex(), hex(&Sha256::digest(&whole)));

        let copy = File::create(dir.path().join("copy")).unwrap();
        let (sha, written) = write_sparse(&copy, &mut whole.as_slice()).unwrap();
        assert_eq!((sha, written), (reader.hex(), size));
        let before = std::fs::metadata(dir.path().join("s")).unwrap().blocks();
        let after = copy.metadata().unwrap().blocks();
        assert!(after <= before + 64, "restored {after} blocks, the original had {before}");
    }
}
