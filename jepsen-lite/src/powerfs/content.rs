//! A file's bytes as copy-on-write pages, so that remembering the synced
//! state of a file at each `fsync` costs a vector of `Arc` clones, not a
//! copy of the file: a page shared with the synced state is copied only
//! when it is written again.

use std::sync::Arc;

/// Bytes per page.
pub const PAGE: usize = 4096;

type Page = Arc<[u8; PAGE]>;

/// The bytes of one file. Pages never written are holes and read as zeros.
#[derive(Debug, Clone, Default)]
pub struct Content {
    pages: Vec<Option<Page>>,
    len: u64,
}

impl Content {
    /// The file's length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the file is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Up to `size` bytes from `offset` (fewer at the end of the file).
    pub fn read(&self, offset: u64, size: usize) -> Vec<u8> {
        if offset >= self.len {
            return Vec::new();
        }
        let end = self.len.min(offset.saturating_add(size as u64));
        let mut out = Vec::with_capacity((end - offset) as usize);
        let mut pos = offset;
        while pos < end {
            let (page, at) = split(pos);
            let take = (PAGE - at).min((end - pos) as usize);
            match self.pages.get(page).and_then(Option::as_ref) {
                Some(p) => out.extend_from_slice(&p[at..at + take]),
                None => out.resize(out.len() + take, 0),
            }
            pos += take as u64;
        }
        out
    }

    /// Writes `data` at `offset`, growing the file (with a hole) if needed.
    pub fn write(&mut self, offset: u64, data: &[u8]) {
        let end = offset + data.len() as u64;
        let mut pos = offset;
        let mut rest = data;
        while !rest.is_empty() {
            let (page, at) = split(pos);
            let take = (PAGE - at).min(rest.len());
            if self.pages.len() <= page {
                self.pages.resize(page + 1, None);
            }
            let slot = self.pages[page].get_or_insert_with(|| Arc::new([0; PAGE]));
            Arc::make_mut(slot)[at..at + take].copy_from_slice(&rest[..take]);
            rest = &rest[take..];
            pos += take as u64;
        }
        self.len = self.len.max(end);
    }

    /// Sets the length: cuts the file, or grows it with a hole.
    pub fn truncate(&mut self, len: u64) {
        if len < self.len {
            let (page, at) = split(len);
            if at == 0 {
                self.pages.truncate(page);
            } else {
                self.pages.truncate(page + 1);
                if let Some(Some(p)) = self.pages.get_mut(page) {
                    // Bytes past the new end must read as zeros if the
                    // file grows again.
                    Arc::make_mut(p)[at..].fill(0);
                }
            }
        }
        self.len = len;
    }
}

/// Page index and offset in the page of byte `pos`.
fn split(pos: u64) -> (usize, usize) {
    ((pos / PAGE as u64) as usize, (pos % PAGE as u64) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_across_pages_read_back_and_holes_read_as_zeros() {
        let mut c = Content::default();
        c.write(PAGE as u64 * 2 - 3, b"abcdef");
        assert_eq!(c.len(), PAGE as u64 * 2 + 3);
        assert_eq!(c.read(PAGE as u64 * 2 - 4, 8), b"\0abcdef");
        assert_eq!(c.read(0, 4), [0; 4]);
        assert!(c.read(c.len(), 10).is_empty());
    }

    #[test]
    fn a_clone_does_not_see_later_writes() {
        let mut c = Content::default();
        c.write(0, b"old");
        let snapshot = c.clone();
        c.write(0, b"new");
        c.write(PAGE as u64, b"more");
        assert_eq!(snapshot.read(0, 10), b"old");
        assert_eq!(c.read(0, 3), b"new");
    }

    #[test]
    fn truncate_then_grow_reads_zeros_past_the_cut() {
        let mut c = Content::default();
        c.write(0, b"0123456789");
        c.truncate(4);
        assert_eq!(c.read(0, 100), b"0123");
        c.truncate(8);
        assert_eq!(c.read(0, 100), b"0123\0\0\0\0");
        c.truncate(0);
        assert!(c.is_empty());
    }
}
