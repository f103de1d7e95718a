//! The power-loss filesystem's model, free of FUSE: a live tree that every
//! operation changes, a durable tree that only syncs change, and the power
//! cut that throws the live tree away.
//!
//! # What survives a power cut (modelled on ext4's default, `data=ordered`)
//! - **File content** (bytes and length, `truncate` included) is durable
//!   only through `fsync` or `fdatasync` of that file: a cut reverts every
//!   file to its content at its last sync (empty if it was never synced).
//!   `sync_file_range` and `close` reach no filesystem as a sync, so they
//!   make nothing durable (the point of the nemesis: sled's flush is a
//!   `sync_file_range`).
//! - **The namespace** (creating, removing and renaming files and
//!   directories, and their modes) is journaled as one sequence: any sync
//!   in the filesystem — `fsync`/`fdatasync` of any file or `fsync` of any
//!   directory — commits every namespace change made before it, as ext4's
//!   fsync commits the running journal transaction. A file whose name was
//!   committed but whose bytes were never synced survives empty.
//! - Ext4 also commits its journal every 5 s, and writes dirty pages back
//!   after about 30 s; the model does neither: a cut may come at any time.
//!
//! After a cut the filesystem is *off*: every operation fails with `EIO`
//! until [`Model::power_on`], so that requests of killed processes still in
//! flight cannot change the new state. File handles opened before a cut are
//! stale for good.
//!
//! Memory is bounded by [`Model::new`]'s `cap`: the live files' lengths add
//! up to at most `cap` bytes (more is `ENOSPC`), and the durable tree is an
//! earlier live tree whose unchanged pages it shares, so the two hold at
//! most twice `cap`.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::time::SystemTime;

use super::content::Content;

/// An inode number.
pub type Ino = u64;

/// The root directory's inode.
pub const ROOT: Ino = 1;

/// Why an operation failed; each maps to one errno.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FsError {
    #[error("no such file or directory")]
    NotFound,
    #[error("file exists")]
    Exists,
    #[error("not a directory")]
    NotDir,
    #[error("is a directory")]
    IsDir,
    #[error("directory not empty")]
    NotEmpty,
    #[error("no space left (the filesystem's cap)")]
    NoSpace,
    #[error("invalid argument")]
    Invalid,
    #[error("bad or stale file handle (opened before a power cut?)")]
    BadHandle,
    #[error("input/output error: the power is off")]
    PoweredOff,
}

/// File or directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
}

/// What `stat` shows of an inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr {
    pub ino: Ino,
    pub kind: Kind,
    pub size: u64,
    /// Permission bits.
    pub perm: u16,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: SystemTime,
}

/// The changes a `setattr` asks for.
#[derive(Debug, Clone, Copy, Default)]
pub struct SetAttr {
    pub perm: Option<u16>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub mtime: Option<SystemTime>,
}

/// Who creates an inode.
#[derive(Debug, Clone, Copy)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

#[derive(Debug, Clone)]
enum Body {
    File(Content),
    Dir { parent: Ino, entries: BTreeMap<OsString, Ino> },
}

#[derive(Debug, Clone)]
struct Node {
    body: Body,
    perm: u16,
    uid: u32,
    gid: u32,
    mtime: SystemTime,
    /// Names pointing at this node (0: unlinked, alive while open).
    nlink: u32,
}

impl Node {
    fn new(body: Body, perm: u16, owner: Owner) -> Self {
        Node { body, perm, uid: owner.uid, gid: owner.gid, mtime: SystemTime::now(), nlink: 1 }
    }

    fn attr(&self, ino: Ino) -> Attr {
        let (kind, size) = match &self.body {
            Body::File(c) => (Kind::File, c.len()),
            Body::Dir { entries, .. } => (Kind::Dir, entries.len() as u64),
        };
        Attr {
            ino,
            kind,
            size,
            perm: self.perm,
            nlink: self.nlink,
            uid: self.uid,
            gid: self.gid,
            mtime: self.mtime,
        }
    }
}

type Tree = BTreeMap<Ino, Node>;

/// The filesystem: live and durable trees, open handles, the power switch.
#[derive(Debug)]
pub struct Model {
    live: Tree,
    durable: Tree,
    /// Open file handle → inode.
    handles: BTreeMap<u64, Ino>,
    next_ino: Ino,
    next_fh: u64,
    cap: u64,
    powered: bool,
}

impl Model {
    /// An empty filesystem whose files may hold `cap` bytes in all.
    pub fn new(cap: u64, root: Owner) -> Self {
        let root = Node::new(Body::Dir { parent: ROOT, entries: BTreeMap::new() }, 0o755, root);
        let live = Tree::from([(ROOT, root)]);
        Model {
            durable: live.clone(),
            live,
            handles: BTreeMap::new(),
            next_ino: ROOT + 1,
            next_fh: 1,
            cap,
            powered: true,
        }
    }

    // === power ===

    /// A power cut: every unsynced change is lost, every handle goes stale,
    /// and the filesystem is off until [`Model::power_on`].
    pub fn power_cut(&mut self) {
        self.live = self.durable.clone();
        self.handles.clear();
        self.powered = false;
    }

    /// Power back on, with what survived the cut.
    pub fn power_on(&mut self) {
        self.powered = true;
    }

    fn on(&self) -> Result<(), FsError> {
        if self.powered { Ok(()) } else { Err(FsError::PoweredOff) }
    }

    // === sync ===

    /// `fsync`/`fdatasync` of an open file: its content and the whole
    /// namespace become durable.
    pub fn fsync(&mut self, fh: u64) -> Result<(), FsError> {
        self.on()?;
        let ino = self.handle(fh)?;
        self.commit_namespace();
        if let (Some(live), Some(durable)) = (self.live.get(&ino), self.durable.get_mut(&ino))
            && let (Body::File(now), Body::File(kept)) = (&live.body, &mut durable.body)
        {
            *kept = now.clone();
        }
        Ok(())
    }

    /// `fsync` of a directory: the namespace becomes durable.
    pub fn fsyncdir(&mut self, ino: Ino) -> Result<(), FsError> {
        self.on()?;
        self.dir(ino)?;
        self.commit_namespace();
        Ok(())
    }

    /// The journal commit: the durable tree gets the live directories and
    /// every linked live file, keeping the durable content of files that
    /// were already there (new ones start empty).
    fn commit_namespace(&mut self) {
        let mut next = Tree::new();
        for (&ino, node) in &self.live {
            let kept = match &node.body {
                Body::Dir { .. } => node.clone(),
                Body::File(_) if node.nlink == 0 => continue,
                Body::File(_) => {
                    let content = match self.durable.get(&ino).map(|n| &n.body) {
                        Some(Body::File(c)) => c.clone(),
                        _ => Content::default(),
                    };
                    Node { body: Body::File(content), ..node.clone() }
                }
            };
            next.insert(ino, kept);
        }
        self.durable = next;
    }

    // === names ===

    /// The inode `name` in directory `parent`.
    pub fn lookup(&self, parent: Ino, name: &OsStr) -> Result<Attr, FsError> {
        self.on()?;
        let ino = *self.entries(parent)?.get(name).ok_or(FsError::NotFound)?;
        self.getattr(ino)
    }

    /// The attributes of `ino`.
    pub fn getattr(&self, ino: Ino) -> Result<Attr, FsError> {
        self.on()?;
        Ok(self.live.get(&ino).ok_or(FsError::NotFound)?.attr(ino))
    }

    /// Changes mode, owner, length or modification time.
    pub fn setattr(&mut self, ino: Ino, set: SetAttr) -> Result<Attr, FsError> {
        self.on()?;
        if let Some(size) = set.size {
            let old = match &self.live.get(&ino).ok_or(FsError::NotFound)?.body {
                Body::File(c) => c.len(),
                Body::Dir { .. } => return Err(FsError::IsDir),
            };
            self.reserve(old, size)?;
        }
        let node = self.live.get_mut(&ino).ok_or(FsError::NotFound)?;
        if let (Some(size), Body::File(c)) = (set.size, &mut node.body) {
            c.truncate(size);
            node.mtime = SystemTime::now();
        }
        node.perm = set.perm.unwrap_or(node.perm);
        node.uid = set.uid.unwrap_or(node.uid);
        node.gid = set.gid.unwrap_or(node.gid);
        node.mtime = set.mtime.unwrap_or(node.mtime);
        Ok(node.attr(ino))
    }

    /// Creates an empty file (not opened).
    pub fn mknod(&mut self, parent: Ino, name: &OsStr, perm: u16, owner: Owner) -> Result<Attr, FsError> {
        self.add(parent, name, Node::new(Body::File(Content::default()), perm, owner))
    }

    /// Creates a file and opens it: its attributes and a handle.
    pub fn create(
        &mut self,
        parent: Ino,
        name: &OsStr,
        perm: u16,
        owner: Owner,
    ) -> Result<(Attr, u64), FsError> {
        let attr = self.mknod(parent, name, perm, owner)?;
        Ok((attr, self.open(attr.ino)?))
    }

    /// Creates a directory.
    pub fn mkdir(&mut self, parent: Ino, name: &OsStr, perm: u16, owner: Owner) -> Result<Attr, FsError> {
        self.add(parent, name, Node::new(Body::Dir { parent, entries: BTreeMap::new() }, perm, owner))
    }

    fn add(&mut self, parent: Ino, name: &OsStr, node: Node) -> Result<Attr, FsError> {
        self.on()?;
        if name.is_empty() || name == "." || name == ".." {
            return Err(FsError::Invalid);
        }
        if self.entries(parent)?.contains_key(name) {
            return Err(FsError::Exists);
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        let attr = node.attr(ino);
        self.live.insert(ino, node);
        self.entries_mut(parent)?.insert(name.to_os_string(), ino);
        Ok(attr)
    }

    /// Removes the file `name`; its bytes go when the last handle closes.
    pub fn unlink(&mut self, parent: Ino, name: &OsStr) -> Result<(), FsError> {
        self.on()?;
        let ino = *self.entries(parent)?.get(name).ok_or(FsError::NotFound)?;
        if self.dir(ino).is_ok() {
            return Err(FsError::IsDir);
        }
        self.entries_mut(parent)?.remove(name);
        self.drop_link(ino);
        Ok(())
    }

    /// Removes the empty directory `name`.
    pub fn rmdir(&mut self, parent: Ino, name: &OsStr) -> Result<(), FsError> {
        self.on()?;
        let ino = *self.entries(parent)?.get(name).ok_or(FsError::NotFound)?;
        if !self.entries(ino)?.is_empty() {
            return Err(FsError::NotEmpty);
        }
        self.entries_mut(parent)?.remove(name);
        self.live.remove(&ino);
        Ok(())
    }

    /// Renames `parent/name` to `new_parent/new_name`, replacing a file or
    /// an empty directory there (unless `no_replace`).
    pub fn rename(
        &mut self,
        parent: Ino,
        name: &OsStr,
        new_parent: Ino,
        new_name: &OsStr,
        no_replace: bool,
    ) -> Result<(), FsError> {
        self.on()?;
        let ino = *self.entries(parent)?.get(name).ok_or(FsError::NotFound)?;
        self.entries(new_parent)?;
        if new_name.is_empty() || new_name == "." || new_name == ".." {
            return Err(FsError::Invalid);
        }
        let moving_dir = self.dir(ino).is_ok();
        // A directory cannot move into itself or below itself.
        if moving_dir {
            let mut at = new_parent;
            loop {
                if at == ino {
                    return Err(FsError::Invalid);
                }
                match self.live.get(&at).map(|n| &n.body) {
                    Some(Body::Dir { parent, .. }) if *parent != at => at = *parent,
                    _ => break,
                }
            }
        }
        if let Some(&old) = self.entries(new_parent)?.get(new_name) {
            if old == ino {
                return Ok(());
            }
            if no_replace {
                return Err(FsError::Exists);
            }
            match (moving_dir, self.entries(old)) {
                (true, Ok(e)) if !e.is_empty() => return Err(FsError::NotEmpty),
                (true, Ok(_)) => {
                    self.live.remove(&old);
                }
                (true, Err(_)) => return Err(FsError::NotDir),
                (false, Ok(_)) => return Err(FsError::IsDir),
                (false, Err(_)) => self.drop_link(old),
            }
        }
        self.entries_mut(parent)?.remove(name);
        self.entries_mut(new_parent)?.insert(new_name.to_os_string(), ino);
        if let Some(Node { body: Body::Dir { parent, .. }, .. }) = self.live.get_mut(&ino) {
            *parent = new_parent;
        }
        Ok(())
    }

    /// One name fewer for file `ino`; gone when unnamed and not open.
    fn drop_link(&mut self, ino: Ino) {
        let gone = match self.live.get_mut(&ino) {
            Some(n) => {
                n.nlink = n.nlink.saturating_sub(1);
                n.nlink == 0 && !self.handles.values().any(|&h| h == ino)
            }
            None => false,
        };
        if gone {
            self.live.remove(&ino);
        }
    }

    /// `(inode, kind, name)` of every entry, `.` and `..` first.
    pub fn readdir(&self, ino: Ino) -> Result<Vec<(Ino, Kind, OsString)>, FsError> {
        self.on()?;
        let Some(Node { body: Body::Dir { parent, entries }, .. }) = self.live.get(&ino) else {
            return Err(if self.live.contains_key(&ino) { FsError::NotDir } else { FsError::NotFound });
        };
        let mut out = vec![(ino, Kind::Dir, OsString::from(".")), (*parent, Kind::Dir, OsString::from(".."))];
        for (name, &child) in entries {
            let kind = self.live.get(&child).map_or(Kind::File, |n| n.attr(child).kind);
            out.push((child, kind, name.clone()));
        }
        Ok(out)
    }

    // === open files ===

    /// Opens file `ino`: a new handle.
    pub fn open(&mut self, ino: Ino) -> Result<u64, FsError> {
        self.on()?;
        match self.live.get(&ino).map(|n| &n.body) {
            None => return Err(FsError::NotFound),
            Some(Body::Dir { .. }) => return Err(FsError::IsDir),
            Some(Body::File(_)) => {}
        }
        let fh = self.next_fh;
        self.next_fh += 1;
        self.handles.insert(fh, ino);
        Ok(fh)
    }

    /// Closes a handle (a stale one is ignored: its file is gone already).
    pub fn release(&mut self, fh: u64) {
        if let Some(ino) = self.handles.remove(&fh)
            && self.live.get(&ino).is_some_and(|n| n.nlink == 0)
            && !self.handles.values().any(|&h| h == ino)
        {
            self.live.remove(&ino);
        }
    }

    /// Reads up to `size` bytes at `offset`.
    pub fn read(&self, fh: u64, offset: u64, size: usize) -> Result<Vec<u8>, FsError> {
        self.on()?;
        Ok(self.file(self.handle(fh)?)?.read(offset, size))
    }

    /// Writes `data` at `offset` (into the live tree only).
    pub fn write(&mut self, fh: u64, offset: u64, data: &[u8]) -> Result<usize, FsError> {
        self.on()?;
        let ino = self.handle(fh)?;
        let old = self.file(ino)?.len();
        let end = offset.checked_add(data.len() as u64).ok_or(FsError::Invalid)?;
        self.reserve(old, old.max(end))?;
        let node = self.live.get_mut(&ino).ok_or(FsError::NotFound)?;
        if let Body::File(c) = &mut node.body {
            c.write(offset, data);
        }
        node.mtime = SystemTime::now();
        Ok(data.len())
    }

    /// `(bytes used by live files, cap, inodes)`, for `statfs`.
    pub fn usage(&self) -> (u64, u64, u64) {
        (self.used(), self.cap, self.live.len() as u64)
    }

    // === helpers ===

    fn used(&self) -> u64 {
        self.live.values().map(|n| if let Body::File(c) = &n.body { c.len() } else { 0 }).sum()
    }

    /// Fails if a file growing from `old` to `new` bytes passes the cap.
    fn reserve(&self, old: u64, new: u64) -> Result<(), FsError> {
        if new > old && self.used() - old + new > self.cap {
            return Err(FsError::NoSpace);
        }
        Ok(())
    }

    fn handle(&self, fh: u64) -> Result<Ino, FsError> {
        self.handles.get(&fh).copied().ok_or(FsError::BadHandle)
    }

    fn file(&self, ino: Ino) -> Result<&Content, FsError> {
        match self.live.get(&ino).map(|n| &n.body) {
            Some(Body::File(c)) => Ok(c),
            Some(Body::Dir { .. }) => Err(FsError::IsDir),
            None => Err(FsError::NotFound),
        }
    }

    fn dir(&self, ino: Ino) -> Result<(), FsError> {
        self.entries(ino).map(|_| ())
    }

    fn entries(&self, ino: Ino) -> Result<&BTreeMap<OsString, Ino>, FsError> {
        match self.live.get(&ino).map(|n| &n.body) {
            Some(Body::Dir { entries, .. }) => Ok(entries),
            Some(Body::File(_)) => Err(FsError::NotDir),
            None => Err(FsError::NotFound),
        }
    }

    fn entries_mut(&mut self, ino: Ino) -> Result<&mut BTreeMap<OsString, Ino>, FsError> {
        match self.live.get_mut(&ino).map(|n| &mut n.body) {
            Some(Body::Dir { entries, .. }) => Ok(entries),
            Some(Body::File(_)) => Err(FsError::NotDir),
            None => Err(FsError::NotFound),
        }
    }
}
