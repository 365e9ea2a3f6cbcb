//! Runs users' servers as Docker containers through bollard, and builds the catalogue's images.
//!
//! [`DockerSpawner`] implements labhub-core's `Spawner` seam: one container per server,
//! named and labelled after its user and server (`naming`), built from a pure spec with
//! every limit and hardening option set (`plan`), on a bridge network that keeps servers
//! apart from each other and from the host (`network`), with the user's files on a named
//! volume that outlives the container. [`recipes`] builds the catalogue's default images
//! locally, for sites without a registry.

mod config;
mod error;
mod events;
mod http;
mod naming;
mod network;
mod plan;
pub mod recipes;
mod spawner;
mod usage;

pub use config::{DockerConfig, HubId, HubIdError, NetworkName, NetworkNameError, PullPolicy};
pub use naming::{
    LABEL_GROUP_ID, LABEL_HUB, LABEL_IMAGE, LABEL_KIND, LABEL_PORT, LABEL_SERVER, LABEL_USER, LABEL_USER_ID,
    LABEL_VOLUME,
};
pub use spawner::DockerSpawner;
