//! The oldest version of each backend's compositor we support. The table lives in
//! `punktfunk_common::backends` (doctor reads it too); session checks against it before it
//! starts an output.

pub use punktfunk_common::backends::{
    FLOORS, Floor, Version, VersionError, check, floor, parse_version,
};
