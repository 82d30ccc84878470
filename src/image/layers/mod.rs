//! Reads from content: each layer unpacked once into its own directory, the stacks of
//! images listing them, the views a job gets over a stack, the leases jobs hold, and prune.

mod ensure;
mod members;
pub mod prune;
mod stack;
pub mod unpack;
mod view;

pub use ensure::{ensure_stack, stack_path};
pub use stack::{Stack, is_opaque};
pub use unpack::{Ownership, UnpackCaps, Unpacking};
pub use view::{RootfsView, ViewDirs, merge_layers};
