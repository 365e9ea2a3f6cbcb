//! Runs users' servers as Docker containers through bollard, and builds the catalogue's images.
//!
//! [`DockerSpawner`] implements labhub-core's `Spawner` seam: one container per server,
//! named and labelled after its user and server (`naming`), built from a pure spec with
//! every limit and hardening option set (`plan`), on a bridge network that keeps servers
//! apart from each other (`network`), behind firewall rules that keep them off the host,
//! link-local addresses and private ranges (`firewall`, `ranges`), with the user's files on
//! a named volume that outlives the container. [`recipes`] builds the catalogue's default
//! images locally, for sites without a registry.

mod config;
pub mod environments;
mod error;
mod events;
mod firewall;
mod http;
mod naming;
mod network;
mod plan;
mod ranges;
pub mod recipes;
mod spawner;
mod swarm;
mod usage;

pub use config::{
    DockerConfig, HubId, HubIdError, NetworkName, NetworkNameError, PullPolicy, RuntimeMode, SwarmHomes, SwarmImages,
    SwarmNodeConfig,
};
pub use naming::{
    LABEL_GROUP_ID, LABEL_HUB, LABEL_IMAGE, LABEL_KIND, LABEL_PORT, LABEL_SERVER, LABEL_USER, LABEL_USER_ID,
    LABEL_VOLUME,
};
pub use ranges::{PrivateRange, PrivateRangeError};
pub use spawner::DockerSpawner;
pub use swarm::{Copied, SwarmSpawner, check_swarm_subnet, copy_image};
