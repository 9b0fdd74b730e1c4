//! The parity harness is `tests/parity.rs`; fixture reading lives in `ims3-fixtures` and is
//! re-exported here for the harness and the fixture-based tests beside it.

pub use ims3_fixtures::*;
