//! Hashing a clone past the page cache (`O_DIRECT`).
//!
//! A clone shares the data's blocks on disk but none of its cached pages,
//! so hashing it through the cache reads every block into new pages only to
//! drop them again: on two cores a third of a first snapshot's time on XFS
//! went to that kernel work. Direct reads go from the disk into the
//! hasher's buffer. They take offsets, lengths and a buffer aligned to the
//! device's block; [`ALIGN`] covers every common one, and a file whose
//! filesystem or device refuses them is read through the cache as before.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use rustix::fs::OFlags;
use rustix::io::Errno;
use sha2::{Digest, Sha256};

use super::super::format::hex;
use super::super::sparse::{self, hash_zeros, Segment};

/// The alignment direct reads are made with: a multiple of 512- and 4096-byte device blocks.
const ALIGN: usize = 4096;
/// One read: large enough that the disk streams, small enough for a worker's buffer.
const CHUNK: usize = 1 << 20;
/// The largest file read directly. A direct read has no read-ahead: one file
/// read and hashed in turn leaves the disk idle while it hashes, which the
/// other workers' files make up for, but not in a data set of a few large
/// files; those are read through the cache, far ahead.
pub(super) const LARGEST: u64 = 64 << 20;

/// The sha256 of the `size` bytes of `object`, holes as zeros, read past
/// the page cache; `None` when the file is larger than [`LARGEST`] or cannot
/// be read that way (then it is read through the cache: nothing of this
/// attempt is kept). `object`'s status flags are as they were afterwards.
pub(super) fn hash(object: &File, size: u64) -> io::Result<Option<String>> {
    if size > LARGEST {
        return Ok(None);
    }
    let Some(_direct) = DirectReads::enter(object)? else { return Ok(None) };
    let segments = sparse::data_segments(object, size)?.unwrap_or_else(|| whole(size));
    let Some(mut buffer) = AlignedBuffer::new(CHUNK) else { return Ok(None) };
    match hash_segments(|buffer, at| read_block(object, buffer, at), buffer.as_mut(), &segments, size) {
        Ok(hex) => Ok(Some(hex)),
        Err(Refused) => Ok(None),
    }
}

/// A file without holes: one segment, or none when it is empty.
fn whole(size: u64) -> Vec<Segment> {
    match size {
        0 => Vec::new(),
        len => vec![Segment { offset: 0, len }],
    }
}

/// Direct reads could not give the content (refused, or an answer only
/// the cache's reads can be trusted with): read it the usual way.
#[derive(Debug, PartialEq, Eq)]
struct Refused;

/// Reads into `buffer` at the aligned offset `at`: how many bytes came, or
/// [`Refused`] for an error (the buffered read that follows reports a real one).
fn read_block(object: &File, buffer: &mut [u8], at: u64) -> Result<usize, Refused> {
    loop {
        match object.read_at(buffer, at) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return Err(Refused),
        }
    }
}

/// Hashes `size` bytes made of `segments` of data and zeros between them,
/// reading each segment into `buffer` in aligned chunks with `read` (which
/// fills it from an aligned offset, short only at the end of the file).
fn hash_segments(
    mut read: impl FnMut(&mut [u8], u64) -> Result<usize, Refused>,
    buffer: &mut [u8],
    segments: &[Segment],
    size: u64,
) -> Result<String, Refused> {
    let mut hasher = Sha256::new();
    let mut hashed_to = 0u64;
    for segment in segments {
        hash_zeros(&mut hasher, &mut hashed_to, segment.offset);
        let end = segment.offset + segment.len;
        let mut at = segment.offset - segment.offset % ALIGN as u64;
        while hashed_to < end {
            let n = read(buffer, at)?;
            let bytes = &buffer[..n];
            let read_to = at + bytes.len() as u64;
            // A short read anywhere but at the end of the file is not what a
            // direct read of a private clone does: trust only the cache's.
            if read_to <= hashed_to || (!bytes.len().is_multiple_of(ALIGN) && read_to < size) {
                return Err(Refused);
            }
            let from = (hashed_to - at) as usize;
            let to = (read_to.min(end) - at) as usize;
            hasher.update(&bytes[from..to]);
            hashed_to = at + to as u64;
            at = read_to;
        }
    }
    hash_zeros(&mut hasher, &mut hashed_to, size);
    Ok(hex(&hasher.finalize()))
}

/// `O_DIRECT` set on a file's open description, taken off again when dropped.
struct DirectReads<'f> {
    file: &'f File,
    before: OFlags,
}

impl<'f> DirectReads<'f> {
    /// `None` when the filesystem takes no direct reads.
    fn enter(file: &'f File) -> io::Result<Option<DirectReads<'f>>> {
        let before = rustix::fs::fcntl_getfl(file)?;
        match rustix::fs::fcntl_setfl(file, before | OFlags::DIRECT) {
            Ok(()) => Ok(Some(DirectReads { file, before })),
            Err(Errno::INVAL | Errno::OPNOTSUPP) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

impl Drop for DirectReads<'_> {
    fn drop(&mut self) {
        let _ = rustix::fs::fcntl_setfl(self.file, self.before);
    }
}

/// A buffer whose start is aligned for direct reads, cut from a slightly larger allocation.
struct AlignedBuffer {
    bytes: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuffer {
    /// `None` in the unlikely case the allocation cannot be aligned (`align_offset` may say so).
    fn new(len: usize) -> Option<AlignedBuffer> {
        let bytes = vec![0u8; len + ALIGN];
        let start = bytes.as_ptr().align_offset(ALIGN);
        (start < ALIGN).then_some(AlignedBuffer { bytes, start, len })
    }

    fn as_mut(&mut self) -> &mut [u8] {
        &mut self.bytes[self.start..self.start + self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    fn sha256(bytes: &[u8]) -> String {
        hex(&Sha256::digest(bytes))
    }

    /// Hashes `content` as [`hash_segments`] reads it, checking each read is
    /// one a direct read accepts and answering as a file of that content would.
    fn hash_as_direct(content: &[u8], segments: &[Segment], chunk: usize) -> Result<String, Refused> {
        let read = |buffer: &mut [u8], at: u64| {
            assert_eq!(at % ALIGN as u64, 0, "a direct read at an unaligned offset {at}");
            assert_eq!(buffer.len() % ALIGN, 0, "a direct read of an unaligned length");
            Ok(file_read(content, buffer, at))
        };
        hash_segments(read, &mut vec![0u8; chunk], segments, content.len() as u64)
    }

    /// What a read of `content` at `at` gives.
    fn file_read(content: &[u8], buffer: &mut [u8], at: u64) -> usize {
        let at = at as usize;
        let n = buffer.len().min(content.len().saturating_sub(at));
        buffer[..n].copy_from_slice(&content[at..at + n]);
        n
    }

    #[test]
    fn a_file_without_holes_hashes_as_its_bytes_whatever_its_size() {
        for size in [0, 1, 511, 4095, 4096, 4097, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 12345] {
            let content: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
            let got = hash_as_direct(&content, &whole(size as u64), CHUNK).unwrap();
            assert_eq!(got, sha256(&content), "size {size}");
        }
    }

    #[test]
    fn only_the_segments_are_hashed_holes_as_zeros_and_segments_may_start_off_the_alignment() {
        let size = 5 * ALIGN + 300;
        let segments = [
            Segment { offset: 512, len: 1000 },
            Segment { offset: 2 * ALIGN as u64 + 512, len: ALIGN as u64 },
            Segment { offset: 5 * ALIGN as u64, len: 300 },
        ];
        // What the reads return outside the segments must not be hashed: it is a hole.
        let mut file = vec![0xeeu8; size];
        let mut content = vec![0u8; size];
        for s in &segments {
            for i in s.offset..s.offset + s.len {
                (file[i as usize], content[i as usize]) = ((i % 200 + 1) as u8, (i % 200 + 1) as u8);
            }
        }
        // Chunks smaller than a segment, and two segments in one chunk.
        for chunk in [ALIGN, 2 * ALIGN, CHUNK] {
            assert_eq!(hash_as_direct(&file, &segments, chunk).unwrap(), sha256(&content), "chunk {chunk}");
        }
    }

    #[test]
    fn a_file_that_ends_in_a_hole_hashes_its_trailing_zeros() {
        let mut content = vec![0u8; 3 * ALIGN];
        content[..100].fill(9);
        let segments = [Segment { offset: 0, len: 100 }];
        assert_eq!(hash_as_direct(&content, &segments, CHUNK).unwrap(), sha256(&content));
    }

    #[test]
    fn a_file_shorter_than_its_size_is_left_to_the_buffered_read() {
        let content = vec![5u8; 2 * ALIGN + 10];
        // The file ends at 2 blocks + 10 bytes, but its size says 3 blocks.
        let read = |buffer: &mut [u8], at: u64| Ok(file_read(&content, buffer, at));
        let size = 3 * ALIGN as u64;
        assert_eq!(hash_segments(read, &mut vec![0u8; CHUNK], &whole(size), size), Err(Refused));
    }

    #[test]
    fn a_short_read_inside_the_file_is_left_to_the_buffered_read() {
        let content = vec![5u8; 3 * ALIGN];
        let read = |buffer: &mut [u8], at: u64| match at {
            0 => Ok(file_read(&content, &mut buffer[..100], at)),
            _ => Ok(file_read(&content, buffer, at)),
        };
        let size = content.len() as u64;
        assert_eq!(hash_segments(read, &mut vec![0u8; CHUNK], &whole(size), size), Err(Refused));
    }

    #[test]
    fn a_read_that_fails_is_left_to_the_buffered_read() {
        let content = vec![5u8; 3 * ALIGN];
        let read = |buffer: &mut [u8], at: u64| match at {
            0 => Ok(file_read(&content, &mut buffer[..ALIGN], at)),
            _ => Err(Refused),
        };
        let size = content.len() as u64;
        assert_eq!(hash_segments(read, &mut vec![0u8; CHUNK], &whole(size), size), Err(Refused));
    }

    #[test]
    fn a_real_file_with_holes_hashes_the_same_read_directly_and_keeps_its_flags() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("object");
        let file = File::create(&path).unwrap();
        let size = 3 * CHUNK + 5000;
        let mut content = vec![0u8; size];
        for (at, len) in [(1000, 5000), (CHUNK + 512, CHUNK), (3 * CHUNK, 5000)] {
            let bytes: Vec<u8> = (at..at + len).map(|i| (i % 241 + 1) as u8).collect();
            file.write_all_at(&bytes, at as u64).unwrap();
            content[at..at + len].copy_from_slice(&bytes);
        }
        file.set_len(size as u64).unwrap();
        file.sync_all().unwrap();
        let file = File::options().read(true).write(true).open(&path).unwrap();
        let flags = rustix::fs::fcntl_getfl(&file).unwrap();
        let got = hash(&file, size as u64).unwrap();
        assert_eq!(rustix::fs::fcntl_getfl(&file).unwrap(), flags, "the file's flags are put back");
        match got {
            Some(got) => assert_eq!(got, sha256(&content)),
            // tmpfs took no direct reads before Linux 6.6; every disk filesystem does.
            None => assert!(on_tmpfs(dir.path()), "direct reads refused on {}", dir.path().display()),
        }
    }

    fn on_tmpfs(path: &std::path::Path) -> bool {
        rustix::fs::statfs(path).is_ok_and(|s| s.f_type == libc::TMPFS_MAGIC)
    }
}
