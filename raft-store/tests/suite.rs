//! openraft's storage conformance suite against the sled log store and
//! state machine. A plain `#[test]`: the suite builds its own runtimes.

use std::time::Duration;

use ferry_raft_store::{LogStore, StateMachineStore, TypeConfig};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{AnyError, StorageError, StorageIOError};
use tempfile::TempDir;

struct SledBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for SledBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachineStore), StorageError<u64>> {
        let io = |e: &dyn std::error::Error| -> StorageError<u64> {
            StorageIOError::<u64>::write(AnyError::error(e.to_string())).into()
        };
        let dir = tempfile::tempdir().map_err(|e| io(&e))?;
        let db = ferry_raft_store::open_db(dir.path(), Duration::from_secs(5)).map_err(|e| io(&e))?;
        let sync = ferry_raft_store::DiskSync::open(dir.path(), ferry_raft_store::SyncMode::Fdatasync)
            .map_err(|e| io(&e))?;
        let (log, sm) = ferry_raft_store::open(&db, &std::sync::Arc::new(sync)).map_err(|e| io(&e))?;
        Ok((dir, log, sm))
    }
}

#[test]
fn sled_store_passes_openraft_suite() -> anyhow::Result<()> {
    Suite::test_all(SledBuilder)?;
    Ok(())
}
