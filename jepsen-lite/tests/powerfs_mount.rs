//! powerfs through the kernel (needs root and /dev/fuse; skipped, saying
//! so, otherwise): ordinary file calls on a mounted disk, a power cut, and
//! only what was `fdatasync`ed or `fsync`ed is read back — not from the
//! kernel's page cache either.

use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;

use jepsen_lite::powerfs::disks::Disks;

fn can_mount() -> Result<(), String> {
    if !nix::unistd::geteuid().is_root() {
        return Err("not root".into());
    }
    if !Path::new("/dev/fuse").exists() {
        return Err("no /dev/fuse".into());
    }
    Ok(())
}

#[test]
fn a_power_cut_keeps_only_what_was_synced() -> Result<(), Box<dyn std::error::Error>> {
    if let Err(e) = can_mount() {
        eprintln!("skipped: {e}");
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("n1");
    let disks = Disks::mount([(1, data.clone())])?;

    std::fs::create_dir(data.join("raft"))?;
    let log = data.join("raft/db");
    let mut f = std::fs::OpenOptions::new().create_new(true).read(true).write(true).open(&log)?;
    f.write_all(b"acknowledged")?;
    f.sync_data()?;
    f.write_all(b" and lost")?;
    f.write_at(b"A", 0)?;
    // A second file whose name is committed by the sync below but whose
    // bytes are not.
    std::fs::write(data.join("raft/conf"), b"unsynced")?;
    let mut other = std::fs::OpenOptions::new().create_new(true).write(true).open(data.join("other"))?;
    other.write_all(b"x")?;
    other.sync_all()?;
    std::fs::write(data.join("late"), b"created after the last sync")?;
    assert_eq!(std::fs::read(&log)?, b"Acknowledged and lost");
    drop((f, other));

    disks.cut(&[1])?;
    assert!(std::fs::read(&log).is_err(), "a cut disk must fail until powered on");
    disks.power_on(&[1])?;

    assert_eq!(std::fs::read(&log)?, b"acknowledged");
    assert_eq!(std::fs::read(data.join("raft/conf"))?, b"");
    assert!(!data.join("late").exists());
    let mut names: Vec<String> = std::fs::read_dir(&data)?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()?;
    names.sort();
    assert_eq!(names, ["other", "raft"]);

    drop(disks);
    assert!(std::fs::read_dir(&data)?.next().is_none(), "the disk is unmounted: its data dir is empty");
    Ok(())
}
