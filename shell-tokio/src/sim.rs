//! Hooks for simulators (feature `sim`): plug a transport of your own into a node
//! built by [`ClusterBuilder`](crate::ClusterBuilder), so that a simulation assembles
//! its nodes exactly as an application does, and queues its sends through the same
//! per-peer queues as the hyper transport.
//!
//! ```ignore
//! let cluster = ClusterBuilder::new(discovery)
//!     .mounted()
//!     .advertise("10.0.0.1:7000")
//!     .with_transport(|cx: TransportContext| Arc::new(MyTransport::new(cx)))
//!     .start()
//!     .await?;
//! ```
//!
//! A node's durable state can live on a [`MemoryDisk`] instead of a data directory
//! (`ClusterBuilder::memory_disk`), so a simulated restart keeps it without a file.
//!
//! Not a stable API: it exists for `cluster-mode-madsim`.

pub use crate::cluster::TransportContext;
pub use crate::driver::Inbox;
pub use crate::queue::{Backlog, PeerQueue, PeerQueues, Pushed};
pub use crate::storage::MemoryDisk;
