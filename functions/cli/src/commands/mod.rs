pub mod common;
pub mod plan;
pub mod rule;
pub mod sandbox;
pub mod status;
pub mod sync;
pub mod test_connection;
pub mod unlock;
