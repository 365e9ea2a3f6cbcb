//! labhub's domain: validated names, images and resources, roles, and the seams
//! (`Spawner`, `Clock`) that the rest of the hub is written against.
//!
//! Nothing here knows about HTTP, SQL or Docker (the `sqlx` feature only lets the store
//! encode the typed ids).

pub mod clock;
pub mod environment;
pub mod ids;
pub mod image;
pub mod listing;
pub mod names;
pub mod placement;
pub mod quota;
pub mod resources;
pub mod role;
pub mod scope;
pub mod secret;
pub mod spawner;

pub use clock::{Clock, ManualClock, SystemClock};
pub use ids::{
    BackupId, BuildId, Credential, EnvironmentId, GroupId, ImageId, ServerId, ServiceId, SessionId, ShareCodeId,
    TokenId, UserId,
};
pub use image::{Contract, ImageFields, ImageKind, ImageRef, RegistryPath, RegistryPathError};
pub use names::{DatasetName, GroupName, NameError, NodeName, RoleName, ServerName, ServiceName, UserName};
pub use placement::{Placement, PlacementError};
pub use quota::{ImageAllowance, Quota};
pub use resources::Resources;
pub use role::{AccountState, GroupRole, Role};
pub use scope::{Filter, Holder, Scope, ScopeError, ScopeSet, ScopeSpec, Target};
pub use secret::Secret;
pub use spawner::{ExtraMount, MountSource, Owner, ServerState, Storage};

/// What [`name_type!`] expands to needs, reachable from any crate that invokes it.
#[doc(hidden)]
pub mod __private {
    pub use serde;
}
