//! The power-loss filesystem's sync/drop model, without FUSE (no root):
//! what a power cut keeps and what it drops.

use std::ffi::OsStr;

use jepsen_lite::powerfs::model::{FsError, Model, Owner, ROOT, SetAttr};

const ROOT_OWNER: Owner = Owner { uid: 0, gid: 0 };

fn fs() -> Model {
    Model::new(1 << 20, ROOT_OWNER)
}

fn name(s: &str) -> &OsStr {
    OsStr::new(s)
}

/// Reads all of the file `n` in the root directory through a fresh handle.
fn read_all(m: &mut Model, n: &str) -> Result<Vec<u8>, FsError> {
    let ino = m.lookup(ROOT, name(n))?.ino;
    let fh = m.open(ino)?;
    let data = m.read(fh, 0, 1 << 20)?;
    m.release(fh);
    Ok(data)
}

fn cut(m: &mut Model) {
    m.power_cut();
    m.power_on();
}

#[test]
fn only_the_synced_content_survives_a_cut() -> Result<(), FsError> {
    let mut m = fs();
    let (_, fh) = m.create(ROOT, name("log"), 0o644, ROOT_OWNER)?;
    m.write(fh, 0, b"synced")?;
    m.fsync(fh)?;
    m.write(fh, 6, b"-and-lost")?;
    m.write(fh, 0, b"S")?;
    assert_eq!(read_all(&mut m, "log")?, b"Synced-and-lost");
    cut(&mut m);
    assert_eq!(read_all(&mut m, "log")?, b"synced");
    Ok(())
}

#[test]
fn a_truncate_is_content_and_needs_a_sync_of_its_file() -> Result<(), FsError> {
    let mut m = fs();
    let (attr, fh) = m.create(ROOT, name("seg"), 0o644, ROOT_OWNER)?;
    m.write(fh, 0, b"0123456789")?;
    m.fsync(fh)?;
    m.setattr(attr.ino, SetAttr { size: Some(3), ..SetAttr::default() })?;
    cut(&mut m);
    assert_eq!(read_all(&mut m, "seg")?, b"0123456789");
    let ino = m.lookup(ROOT, name("seg"))?.ino;
    let fh = m.open(ino)?;
    m.setattr(ino, SetAttr { size: Some(3), ..SetAttr::default() })?;
    m.fsync(fh)?;
    cut(&mut m);
    assert_eq!(read_all(&mut m, "seg")?, b"012");
    Ok(())
}

#[test]
fn names_are_durable_at_any_sync_and_unsynced_files_survive_empty() -> Result<(), FsError> {
    let mut m = fs();
    let dir = m.mkdir(ROOT, name("raft"), 0o755, ROOT_OWNER)?;
    let (_, conf) = m.create(dir.ino, name("conf"), 0o644, ROOT_OWNER)?;
    m.write(conf, 0, b"never synced")?;
    let (_, db) = m.create(dir.ino, name("db"), 0o644, ROOT_OWNER)?;
    m.write(db, 0, b"db")?;
    // Syncing db commits the whole namespace (the journal), not conf's bytes.
    m.fsync(db)?;
    m.create(dir.ino, name("after"), 0o644, ROOT_OWNER)?;
    cut(&mut m);
    let dir = m.lookup(ROOT, name("raft"))?.ino;
    let names: Vec<String> =
        m.readdir(dir)?.into_iter().map(|(_, _, n)| n.to_string_lossy().into_owned()).collect();
    assert_eq!(names, [".", "..", "conf", "db"]);
    assert_eq!(m.lookup(dir, name("conf"))?.size, 0);
    assert_eq!(m.lookup(dir, name("db"))?.size, 2);
    assert_eq!(m.lookup(dir, name("after")), Err(FsError::NotFound));
    Ok(())
}

#[test]
fn write_sync_rename_sync_dir_is_atomic_and_durable() -> Result<(), FsError> {
    // ferryd's node_id: write a temporary file, fsync it, rename, fsync dir.
    let mut m = fs();
    let (_, fh) = m.create(ROOT, name("node_id.tmp"), 0o644, ROOT_OWNER)?;
    m.write(fh, 0, b"42")?;
    m.fsync(fh)?;
    m.release(fh);
    m.rename(ROOT, name("node_id.tmp"), ROOT, name("node_id"), false)?;
    // Not synced yet: a cut undoes the rename.
    cut(&mut m);
    assert_eq!(read_all(&mut m, "node_id.tmp")?, b"42");
    assert_eq!(m.lookup(ROOT, name("node_id")), Err(FsError::NotFound));
    m.rename(ROOT, name("node_id.tmp"), ROOT, name("node_id"), false)?;
    m.fsyncdir(ROOT)?;
    cut(&mut m);
    assert_eq!(read_all(&mut m, "node_id")?, b"42");
    assert_eq!(m.lookup(ROOT, name("node_id.tmp")), Err(FsError::NotFound));
    Ok(())
}

#[test]
fn while_off_everything_fails_and_old_handles_stay_stale() -> Result<(), FsError> {
    let mut m = fs();
    let (attr, fh) = m.create(ROOT, name("f"), 0o644, ROOT_OWNER)?;
    m.fsync(fh)?;
    m.power_cut();
    assert_eq!(m.write(fh, 0, b"late"), Err(FsError::PoweredOff));
    assert_eq!(m.getattr(attr.ino), Err(FsError::PoweredOff));
    assert_eq!(m.mkdir(ROOT, name("d"), 0o755, ROOT_OWNER), Err(FsError::PoweredOff));
    m.power_on();
    assert_eq!(m.write(fh, 0, b"late"), Err(FsError::BadHandle));
    assert_eq!(m.fsync(fh), Err(FsError::BadHandle));
    assert!(read_all(&mut m, "f")?.is_empty());
    Ok(())
}

#[test]
fn an_unlinked_open_file_stays_readable_until_closed() -> Result<(), FsError> {
    let mut m = fs();
    let (attr, fh) = m.create(ROOT, name("blob"), 0o644, ROOT_OWNER)?;
    m.write(fh, 0, b"still here")?;
    m.unlink(ROOT, name("blob"))?;
    assert_eq!(m.lookup(ROOT, name("blob")), Err(FsError::NotFound));
    assert_eq!(m.read(fh, 0, 100)?, b"still here");
    m.release(fh);
    assert_eq!(m.getattr(attr.ino), Err(FsError::NotFound));
    Ok(())
}

#[test]
fn the_cap_bounds_what_live_files_may_hold() -> Result<(), FsError> {
    let mut m = Model::new(10, ROOT_OWNER);
    let (a, fa) = m.create(ROOT, name("a"), 0o644, ROOT_OWNER)?;
    let (_, fb) = m.create(ROOT, name("b"), 0o644, ROOT_OWNER)?;
    m.write(fa, 0, b"123456")?;
    assert_eq!(m.write(fb, 0, b"12345"), Err(FsError::NoSpace));
    m.write(fb, 0, b"1234")?;
    // Overwriting in place needs no space.
    m.write(fa, 0, b"abcdef")?;
    assert_eq!(m.setattr(a.ino, SetAttr { size: Some(7), ..SetAttr::default() }), Err(FsError::NoSpace));
    m.setattr(a.ino, SetAttr { size: Some(1), ..SetAttr::default() })?;
    assert_eq!(m.usage().0, 5);
    Ok(())
}

#[test]
fn renames_replace_files_and_refuse_bad_targets() -> Result<(), FsError> {
    let mut m = fs();
    let d = m.mkdir(ROOT, name("d"), 0o755, ROOT_OWNER)?;
    let sub = m.mkdir(d.ino, name("sub"), 0o755, ROOT_OWNER)?;
    m.create(ROOT, name("x"), 0o644, ROOT_OWNER)?;
    m.create(ROOT, name("y"), 0o644, ROOT_OWNER)?;
    assert_eq!(m.rename(ROOT, name("d"), sub.ino, name("loop"), false), Err(FsError::Invalid));
    assert_eq!(m.rename(ROOT, name("x"), ROOT, name("y"), true), Err(FsError::Exists));
    assert_eq!(m.rename(ROOT, name("x"), ROOT, name("d"), false), Err(FsError::IsDir));
    m.rename(ROOT, name("x"), ROOT, name("y"), false)?;
    assert_eq!(m.lookup(ROOT, name("x")), Err(FsError::NotFound));
    assert_eq!(m.rmdir(ROOT, name("d")), Err(FsError::NotEmpty));
    m.rmdir(d.ino, name("sub"))?;
    m.rmdir(ROOT, name("d"))?;
    Ok(())
}
