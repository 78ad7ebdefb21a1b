//! Where policies come from (a folder, or labelled ConfigMaps), and the one snapshot
//! every request reads.
//!
//! Sources compile policies off the request path and swap a whole new `PolicySet` in; a
//! request takes the current snapshot with one atomic load and never waits on a reload.

pub mod configmap;
pub mod drivers;
pub mod events;
mod folder;
pub mod history;
pub mod install;
mod store;

pub use configmap::{ConfigMapPolicies, ConfigMapWatcher};
pub use drivers::{DriverCache, Drivers};
pub use folder::{load_paths, policy_files, FolderSource, ScanReport};
pub use history::PolicyHistory;
pub use store::PolicyStore;

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot read policy folder {path}: {source}")]
    Folder {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read {path}: {source}")]
    File {
        path: String,
        #[source]
        source: std::io::Error,
    },
}
