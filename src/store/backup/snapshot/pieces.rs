//! Large files stored in pieces, so that a write to a large file costs the
//! next snapshot what it changed, not the file's size.
//!
//! A file of [`PIECED_FROM`] bytes or more that is not cloned (a SQLite
//! database read through its backup API, any large file on a filesystem
//! without reflinks) is cut into pieces of [`PIECE`] bytes. Each piece is an
//! object of its own, named by its sha256 like any other: held already (by
//! this snapshot or, as a hard link, the one before) it is not written
//! again. In place of the file's object, `objects/<ab>/<sha256>.pieces`
//! lists its pieces in order, `-` for one wholly inside a hole. The
//! manifest's sha256 stays that of the whole content, which `verify` checks
//! as for any file, whatever its pieces.

use std::fs::{self, File};
use std::io::{self, BufRead, Read};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use super::super::format::hex;
use super::super::sink::{Content, Digest, Stored};
use super::super::sparse::{self, hash_zeros, ReadAt, Segment};
use super::objects;

/// The size of a piece. A database's appended rows change its first pages
/// and its last ones: 1 MiB pieces store 3 MiB of a 40 MiB SQLite database
/// after a hundred rows, 256 KiB pieces 0.7 MiB, at four times the objects.
pub(super) const PIECE: u64 = 1 << 20;
/// Files from this size on are stored in pieces when they are not cloned.
pub(super) const PIECED_FROM: u64 = 8 << 20;

const SUFFIX: &str = ".pieces";
const HEADER: &str = "upgraderd pieces 1";
const HOLE: &str = "-";

/// Where the list of pieces of `sha256`'s content is.
fn list_path(objects: &Path, sha256: &str) -> PathBuf {
    let mut path = objects::path(objects, sha256).into_os_string();
    path.push(SUFFIX);
    PathBuf::from(path)
}

/// Whether an object's file name is that of a list of pieces, and of which content.
pub(super) fn listed_content(file_name: &str) -> Option<&str> {
    file_name.strip_suffix(SUFFIX)
}

/// A content's pieces, in order: a sha256 each, `None` for one wholly inside a hole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Pieces {
    piece: u64,
    size: u64,
    pieces: Vec<Option<String>>,
}

impl Pieces {
    fn count(size: u64, piece: u64) -> u64 {
        size.div_ceil(piece)
    }

    /// The offset and length of piece `index`.
    fn range(&self, index: usize) -> (u64, u64) {
        let start = index as u64 * self.piece;
        (start, self.piece.min(self.size - start))
    }

    /// The sha256 of every piece stored (holes have none).
    pub(super) fn stored(&self) -> impl Iterator<Item = (&str, u64)> {
        self.pieces.iter().enumerate().filter_map(|(i, p)| Some((p.as_deref()?, self.range(i).1)))
    }

    /// The data segments of the content, `None` when no piece is a hole.
    pub(super) fn segments(&self) -> Option<Vec<Segment>> {
        if self.pieces.iter().all(Option::is_some) {
            return None;
        }
        let mut segments: Vec<Segment> = Vec::new();
        for (index, piece) in self.pieces.iter().enumerate() {
            if piece.is_none() {
                continue;
            }
            let (offset, len) = self.range(index);
            match segments.last_mut() {
                Some(last) if last.offset + last.len == offset => last.len += len,
                _ => segments.push(Segment { offset, len }),
            }
        }
        Some(segments)
    }

    fn render(&self) -> String {
        let mut text = format!("{HEADER}\npiece {}\nsize {}\n", self.piece, self.size);
        for piece in &self.pieces {
            text.push_str(piece.as_deref().unwrap_or(HOLE));
            text.push('\n');
        }
        text
    }

    /// Reads a list as [`render`](Self::render) writes it, for a content of
    /// `size` bytes. A line is read only up to the length of a sha256 and no
    /// line past the count: a crafted list is never read whole into memory.
    fn parse(list: impl BufRead, size: u64) -> Result<Pieces, String> {
        let mut lines = Lines { list, line: String::new() };
        if lines.next()? != Some(HEADER) {
            return Err(format!("it does not begin with `{HEADER}`"));
        }
        let mut number = |name: &str| -> Result<u64, String> {
            lines
                .next()?
                .and_then(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse::<u64>().ok())
                .ok_or_else(|| format!("its `{name}` line is missing or not a number"))
        };
        let piece = number("piece")?;
        let listed_size = number("size")?;
        if !piece.is_power_of_two() || !(PIECE..=1 << 30).contains(&piece) {
            return Err(format!("its piece size {piece} is not a power of two from {PIECE} to 1 GiB"));
        }
        if listed_size != size {
            return Err(format!("it lists {listed_size} bytes, the manifest says {size}"));
        }
        let count = Pieces::count(size, piece);
        let mut pieces = Vec::new();
        while let Some(line) = lines.next()? {
            if pieces.len() as u64 == count {
                return Err(format!("it lists more than the {count} pieces {size} bytes make"));
            }
            match line {
                HOLE => pieces.push(None),
                sha256 if objects::is_sha256(sha256) => pieces.push(Some(sha256.to_string())),
                other => return Err(format!("`{other}` is neither a sha256 nor `{HOLE}`")),
            }
        }
        if pieces.len() as u64 != count {
            return Err(format!("it lists {} pieces where {size} bytes make {count}", pieces.len()));
        }
        Ok(Pieces { piece, size, pieces })
    }
}

/// The lines of a list, each read up to a little past the longest a list holds.
struct Lines<R> {
    list: R,
    line: String,
}

impl<R: BufRead> Lines<R> {
    fn next(&mut self) -> Result<Option<&str>, String> {
        const LONGEST: u64 = 80;
        self.line.clear();
        match (&mut self.list).take(LONGEST).read_line(&mut self.line) {
            Ok(0) => Ok(None),
            Ok(_) if !self.line.ends_with('\n') => {
                Err(format!("a line is longer than {LONGEST} bytes or unterminated: `{}`", self.line.trim_end()))
            }
            Ok(_) => Ok(Some(self.line.trim_end_matches('\n'))),
            Err(e) => Err(format!("it cannot be read: {e}")),
        }
    }
}

/// Stores `size` bytes of `source` in pieces: each piece this snapshot or
/// the one before it (`earlier`, its objects) already holds is not written
/// again. The sha256 given is that of the whole content read, holes as
/// zeros; a file that shrank while it was read is padded with zeros.
pub(super) fn store(objects: &Path, earlier: Option<&Path>, n: u64, source: &File, size: u64) -> io::Result<Content> {
    let segments = sparse::data_segments(source, size)?;
    let count = Pieces::count(size, PIECE);
    let mut pieces = Pieces { piece: PIECE, size, pieces: Vec::with_capacity(count as usize) };
    let (mut whole, mut hashed_to) = (Sha256::new(), 0);
    let (mut written, mut short) = (0, false);
    let mut buffer = vec![0u8; PIECE as usize];
    for index in 0..count as usize {
        let (offset, len) = pieces.range(index);
        let in_hole =
            segments.as_ref().is_some_and(|s| !s.iter().any(|s| s.offset < offset + len && offset < s.offset + s.len));
        if in_hole {
            hash_zeros(&mut whole, &mut hashed_to, offset + len);
            pieces.pieces.push(None);
            continue;
        }
        let bytes = &mut buffer[..len as usize];
        let read = read_full_at(source, bytes, offset)?;
        if read < bytes.len() {
            short = true;
            bytes[read..].fill(0);
        }
        whole.update(&*bytes);
        hashed_to = offset + len;
        let sha256 = hex(&Sha256::digest(&*bytes));
        written += put_piece(objects, earlier, &format!("{n}-{index}"), &sha256, bytes)?;
        pieces.pieces.push(Some(sha256));
    }
    let sha256 = hex(&whole.finalize());
    put_list(objects, &format!("{n}"), &sha256, &pieces)?;
    Ok(Content { digest: Digest::Known(sha256), short, stored: Stored::Pieced { written } })
}

fn read_full_at(source: &File, buffer: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match source.read_at(&mut buffer[filled..], offset + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Stores one piece unless it is held already; its bytes when no earlier
/// snapshot holds it (this one may have stored it already: for another
/// file, or in the first pass of an upgrade whose final pass this is).
fn put_piece(objects: &Path, earlier: Option<&Path>, label: &str, sha256: &str, bytes: &[u8]) -> io::Result<u64> {
    if let Ok(held) = fs::symlink_metadata(objects::path(objects, sha256)) {
        return Ok(if held.nlink() == 1 { bytes.len() as u64 } else { 0 });
    }
    if let Some(earlier) = earlier {
        if objects::link_object(earlier, objects, sha256, bytes.len() as u64)? {
            return Ok(0);
        }
    }
    let incoming = objects::Incoming::create(objects, label, bytes.len() as u64)?;
    incoming.write_all(bytes)?;
    objects::name_hashed(incoming, sha256)?;
    Ok(bytes.len() as u64)
}

/// Stores the list of pieces of `sha256`'s content, read-only, unless held already.
fn put_list(objects: &Path, label: &str, sha256: &str, pieces: &Pieces) -> io::Result<()> {
    let target = list_path(objects, sha256);
    if fs::symlink_metadata(&target).is_ok() {
        return Ok(());
    }
    let list = pieces.render();
    let incoming = objects::Incoming::create(objects, label, list.len() as u64)?;
    incoming.write_all(list.as_bytes())?;
    objects::name_as(incoming, &target)
}

/// Reads the list of pieces of `sha256`'s content of `size` bytes:
/// `Ok(None)` when there is none, an error naming what is wrong with it.
pub(super) fn read_list(objects: &Path, sha256: &str, size: u64) -> Result<Option<Pieces>, String> {
    let path = list_path(objects, sha256);
    let file = match objects::open_regular(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("its list of pieces {} cannot be opened: {e}", path.display())),
    };
    match file.metadata() {
        Ok(meta) if meta.is_file() => {}
        _ => return Err(format!("its list of pieces {} is not a regular file", path.display())),
    }
    Pieces::parse(io::BufReader::new(file), size)
        .map(Some)
        .map_err(|e| format!("its list of pieces {} is damaged: {e}", path.display()))
}

/// Makes `sha256`'s content, stored in pieces in the snapshot whose objects
/// are `from`, one of `to`'s too: each piece and the list hard-linked.
/// `false` when `from` does not hold all of it intact.
pub(super) fn link(from: &Path, to: &Path, sha256: &str, size: u64) -> io::Result<bool> {
    let list = list_path(from, sha256);
    let intact = fs::symlink_metadata(&list).is_ok_and(|m| m.is_file() && m.mode() & 0o777 == 0o400);
    if !intact {
        return Ok(false);
    }
    let Ok(Some(pieces)) = read_list(from, sha256, size) else { return Ok(false) };
    for (piece, len) in pieces.stored() {
        if !objects::link_object(from, to, piece, len)? {
            return Ok(false);
        }
    }
    objects::link_file(&list, &list_path(to, sha256))
}

/// A content stored in pieces, read back as the file it was: in order
/// ([`Read`]) or at an offset ([`ReadAt`]), holes as zeros.
pub(in super::super) struct Pieced {
    objects: PathBuf,
    pieces: Pieces,
    /// The piece open last: reads come in order.
    open: Option<(usize, File)>,
    position: u64,
}

impl Pieced {
    pub(super) fn new(objects: PathBuf, pieces: Pieces) -> Pieced {
        Pieced { objects, pieces, open: None, position: 0 }
    }

    /// The data segments of the content, `None` when it has no hole.
    pub(in super::super) fn segments(&self) -> Option<Vec<Segment>> {
        self.pieces.segments()
    }

    /// Opens piece `index`, `None` for a hole: a regular file (a link is
    /// never followed) of its length.
    fn piece(&mut self, index: usize) -> io::Result<Option<&File>> {
        let Some(sha256) = &self.pieces.pieces[index] else { return Ok(None) };
        if self.open.as_ref().is_none_or(|(open, _)| *open != index) {
            let path = objects::path(&self.objects, sha256);
            let damaged = |what: String| io::Error::other(format!("its piece {} {what}", path.display()));
            let file = objects::open_regular(&path).map_err(|e| damaged(format!("cannot be opened: {e}")))?;
            let meta = file.metadata()?;
            let len = self.pieces.range(index).1;
            if !meta.is_file() || meta.len() != len {
                return Err(damaged(format!("is not a regular file of {len} bytes")));
            }
            self.open = Some((index, file));
        }
        Ok(self.open.as_ref().map(|(_, file)| file))
    }
}

impl ReadAt for Pieced {
    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        if offset >= self.pieces.size || buf.is_empty() {
            return Ok(0);
        }
        let index = (offset / self.pieces.piece) as usize;
        let (start, len) = self.pieces.range(index);
        let want = buf.len().min((start + len - offset) as usize);
        match self.piece(index)? {
            Some(piece) => piece.read_at(&mut buf[..want], offset - start),
            None => {
                buf[..want].fill(0);
                Ok(want)
            }
        }
    }
}

impl Read for Pieced {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.read_at(buf, self.position)?;
        self.position += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(size: u64, piece: u64, holes: &[usize]) -> Pieces {
        let pieces = (0..Pieces::count(size, piece) as usize)
            .map(|i| (!holes.contains(&i)).then(|| format!("{i:064x}")))
            .collect();
        Pieces { piece, size, pieces }
    }

    #[test]
    fn a_list_reads_back_as_written_and_gives_its_segments() {
        let size = 5 * PIECE + 7;
        let pieces = listed(size, PIECE, &[1, 2, 5]);
        assert_eq!(Pieces::parse(pieces.render().as_bytes(), size).unwrap(), pieces);
        assert_eq!(
            pieces.segments().unwrap(),
            vec![Segment { offset: 0, len: PIECE }, Segment { offset: 3 * PIECE, len: 2 * PIECE }]
        );
        assert_eq!(listed(3 * PIECE, PIECE, &[]).segments(), None, "no hole, no segments");
    }

    #[test]
    fn a_damaged_list_is_refused_saying_what_is_wrong() {
        let size = 3 * PIECE;
        let good = listed(size, PIECE, &[]).render();
        let first = format!("{:064x}", 0);
        for (text, said) in [
            (good.replace(HEADER, "upgraderd pieces 9"), "does not begin"),
            (good.replace("piece 1048576", "piece 1000000"), "power of two"),
            (good.replace("piece 1048576", "piece 4096"), "power of two"),
            (good.replace("size 3145728", "size 3145729"), "manifest says"),
            (good.replacen(&first, "../../etc/passwd", 1), "neither a sha256"),
            (good.replacen(&first, &"a".repeat(10_000), 1), "longer than"),
            (good.lines().take(5).collect::<Vec<_>>().join("\n") + "\n", "lists 2 pieces"),
            (good.clone() + &format!("{first}\n").repeat(1000), "more than the 3 pieces"),
            (good.trim_end().to_string(), "unterminated"),
        ] {
            let err = Pieces::parse(text.as_bytes(), size).unwrap_err();
            assert!(err.contains(said), "{said}: {err}");
        }
    }

    /// A sparse file of several pieces, one changed: stored in pieces, read
    /// back byte for byte, and only the changed piece written again.
    #[test]
    fn pieces_are_shared_with_the_earlier_snapshot_and_read_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let (first, second) = (dir.path().join("first"), dir.path().join("second"));
        fs::create_dir(&first).unwrap();
        fs::create_dir(&second).unwrap();
        let size = 5 * PIECE + 333;
        let source = dir.path().join("data");
        let file = fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&source).unwrap();
        file.set_len(size).unwrap();
        let mut content = vec![0u8; size as usize];
        for (at, byte) in [(0, 1u8), (PIECE + 10, 2), (4 * PIECE + 5, 3), (size - 3, 4)] {
            file.write_all_at(&[byte; 3], at).unwrap();
            content[at as usize..at as usize + 3].fill(byte);
        }
        let stored = store(&first, None, 1, &file, size).unwrap();
        let Digest::Known(sha256) = stored.digest else { panic!("a piece's digest is known at once") };
        assert_eq!(sha256, hex(&Sha256::digest(&content)));
        let holes = sparse::data_segments(&file, size).unwrap().is_some();
        // Without holes, two pieces of zeros: one object, new bytes of the file both.
        let expected_written = if holes { 3 * PIECE + 333 } else { 5 * PIECE + 333 };
        assert_eq!(stored.stored, Stored::Pieced { written: expected_written });

        file.write_all_at(b"changed", 4 * PIECE + 100).unwrap();
        content[(4 * PIECE + 100) as usize..(4 * PIECE + 107) as usize].copy_from_slice(b"changed");
        let again = store(&second, Some(&first), 2, &file, size).unwrap();
        assert_eq!(again.stored, Stored::Pieced { written: PIECE }, "only the changed piece is new");
        let Digest::Known(sha256) = again.digest else { panic!() };

        let pieces = read_list(&second, &sha256, size).unwrap().unwrap();
        assert_eq!(pieces.segments().is_some(), holes);
        let mut back = Vec::new();
        Pieced::new(second.clone(), pieces).read_to_end(&mut back).unwrap();
        assert!(back == content, "read back byte for byte");
        assert!(read_list(&second, &"0".repeat(64), size).unwrap().is_none());

        let third = dir.path().join("third");
        fs::create_dir(&third).unwrap();
        assert!(link(&second, &third, &sha256, size).unwrap(), "an unchanged file is linked piece by piece");
        fs::remove_dir_all(&second).unwrap();
        let mut back = Vec::new();
        Pieced::new(third.clone(), read_list(&third, &sha256, size).unwrap().unwrap()).read_to_end(&mut back).unwrap();
        assert!(back == content, "and reads back once the snapshot it came from is gone");
    }
}
