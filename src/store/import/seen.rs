//! Repeated ids in one file: each is a bad row naming the line the id
//! first came on.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::io::Read;

use super::header::Header;
use super::reader::{ReadSeek, raw_range};
use super::record::parse_row;
use crate::store::StoreError;
use crate::store::contacts::Row;

/// The ids read so far, to report a repeated id with the line it first
/// came on. Kept as 64-bit hashes with where their record lies in the file
/// (about 28 bytes an id, not the id itself: 10M ids took 1 GB as strings);
/// a hash met again is checked against the first record, read back from
/// the file, so a collision never costs a good row.
#[derive(Default)]
pub(super) struct SeenIds {
    /// hash → (first record's byte offset, its length, its line)
    first: HashMap<u64, (u64, u32, u32), BuildHasherDefault<AlreadyHashed>>,
    /// Ids whose hash an earlier, different id took (rare): kept whole.
    spilled: HashMap<Box<str>, u64>,
}

/// The keys of [`SeenIds::first`] are hashes already: hashing them again
/// would only cost time.
#[derive(Default)]
pub(super) struct AlreadyHashed(u64);

impl Hasher for AlreadyHashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only u64 keys come here (`write_u64`); anything else is folded in.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

impl SeenIds {
    /// Makes room for `ids` in all (an estimate), so the table is not grown
    /// by doubling as the file is read: each doubling held the old table and
    /// the new one at once (about 75 MB at a million ids instead of 50).
    pub(super) fn expect(&mut self, ids: usize) {
        self.first.reserve(ids.saturating_sub(self.first.len()));
    }

    fn hash(id: &str) -> u64 {
        use std::hash::{BuildHasher, BuildHasherDefault};
        BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default().hash_one(id)
    }

    /// The line `id` first came on, or None (and it is recorded as on the
    /// record `rec`, which `reader` has just read).
    pub(super) fn first_line<R: Read>(
        &mut self,
        id: &str,
        line: u64,
        header: &Header,
        again: &mut Box<dyn ReadSeek>,
        rec: &csv::ByteRecord,
        reader: &csv::Reader<R>,
    ) -> Result<Option<u64>, StoreError> {
        let Some(pos) = rec.position() else {
            return Ok(None);
        };
        let start = pos.byte();
        let end = reader.position().byte();
        let h = Self::hash(id);
        match self.first.get(&h) {
            None => {
                let len = u32::try_from(end.saturating_sub(start)).unwrap_or(u32::MAX);
                let line32 = u32::try_from(line).unwrap_or(u32::MAX);
                self.first.insert(h, (start, len, line32));
                Ok(None)
            }
            Some(&(at, len, first)) => {
                if Self::id_at(again, header, at, len)?.as_deref() == Some(id) {
                    return Ok(Some(u64::from(first)));
                }
                // Another id with the same hash: remember this one whole.
                match self.spilled.get(id) {
                    Some(&first) => Ok(Some(first)),
                    None => {
                        self.spilled.insert(id.into(), line);
                        Ok(None)
                    }
                }
            }
        }
    }

    /// The id of the record at `at`, read back from the file.
    fn id_at(
        again: &mut Box<dyn ReadSeek>,
        header: &Header,
        at: u64,
        len: u32,
    ) -> Result<Option<String>, StoreError> {
        let raw = raw_range(again, at, at + u64::from(len)).map_err(|e| StoreError::BadFile {
            path: String::new(),
            message: e.to_string(),
        })?;
        let mut r = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_reader(raw.as_slice());
        let mut rec = csv::ByteRecord::new();
        if !r.read_byte_record(&mut rec).unwrap_or(false) {
            return Ok(None);
        }
        let mut row = Row::default();
        Ok(parse_row(header, &rec, &mut row).ok().map(|()| row.id))
    }
}
